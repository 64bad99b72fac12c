"""Where the harness keeps generated files (trained weights, datasets, baselines): never in git."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_BASELINES_DIR = "HARNESS_BASELINES_DIR"
ENV_CACHE_DIR = "HARNESS_CACHE_DIR"
APP_NAME = "dl-harness"


def cache_root() -> Path:
    """``$HARNESS_CACHE_DIR``, else the user's cache folder for the harness as platformdirs
    names it (``$XDG_CACHE_HOME/dl-harness``, default ``~/.cache/dl-harness`` on Linux,
    ``~/Library/Caches/dl-harness`` on macOS)."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def cache_dir(*parts: str) -> Path:
    """:func:`cache_root` joined with ``parts``, created."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def baselines_dir() -> Path:
    """``$HARNESS_BASELINES_DIR``, else the project's ``baselines/`` folder."""
    return Path(os.environ.get(ENV_BASELINES_DIR) or PROJECT_ROOT / "baselines")
