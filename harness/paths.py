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


SHIPPED_BASELINES_DIR = PROJECT_ROOT / "baselines"  # the baselines that come with the harness (cpu-quick)


def baselines_dir() -> Path:
    """Where ``harness baseline save`` writes: ``$HARNESS_BASELINES_DIR``, else ``baselines/`` in the
    current folder (never the harness's own tree, unless that is the current folder)."""
    explicit = os.environ.get(ENV_BASELINES_DIR)
    return Path(explicit) if explicit else Path.cwd() / "baselines"


def baseline_folders(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders a baseline name is looked up in, first hit wins, as (where from, folder):
    ``explicit`` (a command's ``--dir``), ``$HARNESS_BASELINES_DIR``, the current folder's
    ``baselines/``, the shipped ones. A folder named twice (run from the checkout) counts once, where
    it first comes, with both origins ("current folder, shipped with the harness")."""
    candidates = []
    if explicit:
        candidates.append(("--dir", Path(explicit)))
    if os.environ.get(ENV_BASELINES_DIR):
        candidates.append((f"${ENV_BASELINES_DIR}", Path(os.environ[ENV_BASELINES_DIR])))
    try:
        candidates.append(("current folder", Path.cwd() / "baselines"))
    except OSError:  # the current folder was removed
        pass
    candidates.append(("shipped with the harness", SHIPPED_BASELINES_DIR))
    folders: dict[str, tuple[str, Path]] = {}  # by real path, in order of first mention
    for origin, folder in candidates:
        key = os.path.realpath(folder)
        folders[key] = (f"{folders[key][0]}, {origin}", folders[key][1]) if key in folders else (origin, folder)
    return list(folders.values())


class StoreWriteError(OSError):
    """A file of a run folder (or a baseline, an exported file, the machine's stored peaks) could
    not be written: the disk is full, the quota is spent, the folder is read-only. The file is
    left as it was before the write: no temporary file, no partial line. An :class:`OSError`, so
    ``except OSError`` still catches it. (Here, on the lowest floor, so that every floor raises it.)"""
