"""The project's suites: one file per suite, discovered automatically."""
