"""Models, datasets and helpers shared by more than one suite."""
