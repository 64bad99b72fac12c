"""Where the harness keeps generated files (trained weights, datasets, baselines): never in git."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_BASELINES_DIR = "HARNESS_BASELINES_DIR"


def cache_dir(*parts: str) -> Path:
    """``$HARNESS_CACHE_DIR`` (default ``~/.cache/dl-harness``) joined with ``parts``, created."""
    base = Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "dl-harness")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def baselines_dir() -> Path:
    """``$HARNESS_BASELINES_DIR``, else the project's ``baselines/`` folder."""
    return Path(os.environ.get(ENV_BASELINES_DIR) or PROJECT_ROOT / "baselines")
