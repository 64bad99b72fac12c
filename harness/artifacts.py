"""Generated artifacts (trained weights, datasets) cached on disk and checked on every load.

An artifact is a folder named by the hash of the configuration that made it. It is built into a
temporary folder beside its final place, its manifest (the SHA-256 digest of every file) is written
last, and the folder is renamed into place: a reader sees no artifact, the old one or the complete
new one, never half of one. Every load first checks every file against the manifest; a missing,
altered, unexpected or unreadable file, or a missing manifest, gets the artifact rebuilt.

Builds take an exclusive ``fcntl.flock`` on a lock file beside the artifact folder, so processes
sharing a cache build each artifact once: the others wait, then load what the first one built.

A build is not cut short by a case time limit. While one runs (or waits for another process's
build), :class:`building` defers ``SIGALRM`` in the main thread until the artifact is in the cache,
and tells the listener set with :func:`set_build_listener`, so an isolated worker can ask its
parent to hold its deadline.

Suites use :func:`cached_artifact`; nothing here imports the rest of the engine but its paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import threading
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .paths import cache_dir

MANIFEST = "manifest.json"
MISSING = "missing"  # verify_artifact's answer when there is no artifact at all
_TMP = ".tmp-"  # infixes of a builder's private folders beside the artifact
_OLD = ".old-"


# --------------------------------------------------------------------------- names and digests
def config_dict(config: Any) -> dict:
    """A dataclass or mapping configuration as a plain dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"an artifact configuration must be a dataclass or a mapping, not {type(config).__name__}")


def config_key(kind: str, config: Any) -> str:
    """Folder name of a cached artifact: its kind and the hash of its config."""
    blob = json.dumps({"kind": kind, **config_dict(config)}, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:16]}"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` but the manifest, as sorted POSIX paths relative to it."""
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST and (path.is_file() or path.is_symlink()):
            out.append(rel)
    return sorted(out)


def read_manifest(folder: Path) -> dict:
    """The manifest of an artifact folder (raises OSError or ValueError when unreadable)."""
    data = json.loads((Path(folder) / MANIFEST).read_text())
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ValueError("it holds no {file: sha256} table")
    return data


def verify_artifact(folder: Path) -> str | None:
    """None when ``folder`` holds a complete artifact whose files match its manifest, else why not.

    Every file is hashed: a block of zeros written over weights changes no size and no name.
    """
    folder = Path(folder)
    if not folder.exists():
        return MISSING
    if not folder.is_dir():
        return "not a folder"
    if not (folder / MANIFEST).is_file():
        return "no manifest"
    try:
        listed = read_manifest(folder)["files"]
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({str(exc)[:120]})"
    present = set(_files(folder))
    for name in sorted(listed):
        if name not in present:
            return f"{name} is missing"
    for name in sorted(present - set(listed)):
        return f"{name} is not in the manifest"
    for name, digest in sorted(listed.items()):
        try:
            if sha256_file(folder / name) != digest:
                return f"{name} does not match its checksum"
        except OSError as exc:
            return f"{name} is unreadable ({exc.strerror or exc})"
    return None


# --------------------------------------------------------------------------- build guard
_listener: Callable[[bool], None] | None = None
_active_builds = 0
_count_lock = threading.Lock()
_main_depth = 0  # nesting of builds in the main thread, which alone defers alarms


def set_build_listener(listener: Callable[[bool], None] | None) -> Callable[[bool], None] | None:
    """Call ``listener(True)`` when this process starts building an artifact, ``listener(False)``
    when it has finished (nested or concurrent builds count once). Returns the previous listener.

    An isolated worker uses it to tell its parent to hold the case deadline while a build runs.
    Exceptions the listener raises are turned into warnings: they never break a build.
    """
    global _listener
    previous, _listener = _listener, listener
    return previous


def _notify(state: bool) -> None:
    listener = _listener
    if listener is None:
        return
    try:
        listener(state)
    except Exception as exc:  # noqa: BLE001 - a broken listener must not break the build
        warnings.warn(f"artifact build listener failed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)


class _AlarmDeferral:
    """Holds back SIGALRM in the main thread; re-raises it, once, when released."""

    def __init__(self) -> None:
        self.pending = False
        self.previous: Any = None
        self.swapped = False
        self.old_mask: set | None = None

    def _note(self, signum, frame) -> None:  # a SIGALRM that reached another thread
        self.pending = True

    def hold(self) -> None:
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        # The mask covers this thread only: a process-wide SIGALRM may still land on another
        # thread (torch's pools), whose Python handler would then run here. Note it instead.
        previous = signal.getsignal(signal.SIGALRM)
        if previous is not None:
            self.previous = signal.signal(signal.SIGALRM, self._note)
            self.swapped = True

    def release(self) -> None:
        # Unblock first: an alarm pending on this thread is noted like one from another thread,
        # and whatever the handler restored below raises, the mask is already back.
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
        if self.swapped:
            signal.signal(signal.SIGALRM, self.previous)
        if self.pending:
            signal.raise_signal(signal.SIGALRM)


class building:
    """Context of one artifact build: the case alarm waits for it and the listener knows.

    In the main thread ``SIGALRM`` (the engine's case time limit) is blocked for the duration and
    delivered when the block ends, so the limit takes effect only once the artifact is complete
    in the cache. Nesting is allowed; only the outermost block acts.
    """

    def __enter__(self) -> "building":
        global _active_builds, _main_depth
        self.deferral: _AlarmDeferral | None = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
            _main_depth += 1
            if _main_depth == 1:
                self.deferral = _AlarmDeferral()
                self.deferral.hold()
        with _count_lock:
            _active_builds += 1
            first = _active_builds == 1
        if first:
            _notify(True)
        return self

    def __exit__(self, *exc) -> bool:
        global _active_builds, _main_depth
        with _count_lock:
            _active_builds -= 1
            last = _active_builds == 0
        if last:
            _notify(False)
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
            _main_depth -= 1
        if self.deferral is not None:
            self.deferral.release()  # a held-back alarm's handler may raise from here
        return False


# --------------------------------------------------------------------------- lock
@contextlib.contextmanager
def artifact_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Exclusive ``flock`` on the file ``path``, removed again when released; yields True.

    Whoever takes the lock checks that the file it locked is still the one at ``path`` (a
    previous holder may have removed it in between) and retries otherwise, so removing the file
    never lets two holders in. A holder that dies releases the lock with its file descriptor.
    With ``blocking=False`` a lock held elsewhere yields False at once (and nothing is held).
    A folder or other non-regular file at ``path`` (made by mistake) is removed first.
    """
    path = Path(path)
    while True:
        _repair_lock_path(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            continue  # a folder appeared there again, or another process is still removing it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            mine = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _repair_lock_path(path: Path) -> None:
    """Remove a folder, link or other non-regular file where a lock file belongs: it would fail (or
    misdirect) every lock, so no build could ever run. OSError naming ``path`` when it cannot go."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    try:
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return  # another process removed it first
    except OSError as exc:
        raise OSError(f"cache lock {path} is {what} and cannot be removed ({exc.strerror or exc}); "
                      "remove it by hand") from None


# --------------------------------------------------------------------------- the cache
def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_stale(root: Path, name: str) -> list[str]:
    """Remove what dead builders left in ``root``; called holding the lock of artifact ``name``.

    ``name``'s own leftovers go at once. Another artifact's go only if its lock is free at this
    moment (no process is building it): a live builder's temporary folder is never touched.
    """
    removed = []
    stale: dict[str, list[Path]] = {}
    for path in root.glob(".*"):
        for infix in (_TMP, _OLD):
            owner, found, _ = path.name[1:].partition(infix)
            if found and owner:
                stale.setdefault(owner, []).append(path)
                break
    for owner, paths in stale.items():
        with contextlib.ExitStack() as stack:
            if owner != name and not stack.enter_context(artifact_lock(root / f".{owner}.lock", blocking=False)):
                continue  # its builder is at work
            for path in paths:
                _remove(path)
                removed.append(path.name)
    return removed


def _publish(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``, moving a previous (corrupt) ``folder`` out of the way first."""
    if folder.exists() or folder.is_symlink():
        old = folder.parent / f".{folder.name}{_OLD}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
        os.replace(tmp, folder)
        _remove(old)
    else:
        os.replace(tmp, folder)


def _info(manifest: dict, status: str, folder: Path) -> dict:
    return {**manifest.get("info", {}), "cache": status, "cache_path": str(folder),
            "build_id": manifest.get("build_id", "")}


def _load_checked(folder: Path, load: Callable[[Path], Any]) -> tuple[bool, Any]:
    """(True, (artifact, manifest)) when ``folder`` verifies and loads, else (False, why not)."""
    problem = verify_artifact(folder)
    if problem is not None:
        return False, problem
    try:
        manifest = read_manifest(folder)
        return True, (load(folder), manifest)
    except Exception as exc:  # noqa: BLE001 - files that check out but cannot be read are corrupt too
        return False, f"unloadable ({type(exc).__name__}: {str(exc)[:120]})"


def cached_artifact(kind: str, config: Any, build: Callable[[Path], dict | None], load: Callable[[Path], Any],
                    *, root: str | os.PathLike | None = None, name: str | None = None) -> tuple[Any, dict]:
    """Load the artifact cached for ``config``, building (and caching) it when absent or corrupt.

    ``build(folder)`` writes the artifact's files into an empty folder and returns facts worth
    keeping (e.g. training loss, kept in the manifest); ``load(folder)`` reads it back. The
    artifact lives in ``root`` (default ``cache_dir(kind)``) under ``name`` (default
    :func:`config_key`). Returns ``(artifact, info)``: the build's facts, ``build_seconds``,
    ``build_id``, ``cache_path`` and ``cache`` (``reused``, ``built``, or ``rebuilt: <why>``).
    """
    root = Path(root) if root is not None else cache_dir(kind)
    root.mkdir(parents=True, exist_ok=True)
    name = name or config_key(kind, config)
    if name.startswith(".") or "/" in name or os.sep in name:
        raise ValueError(f"artifact name {name!r} must be a plain folder name")
    folder = root / name
    ok, result = _load_checked(folder, load)
    if ok:
        artifact, manifest = result
        return artifact, _info(manifest, "reused", folder)
    with building():
        t_wait = time.perf_counter()
        with artifact_lock(root / f".{name}.lock"):
            waited_s = time.perf_counter() - t_wait
            ok, result = _load_checked(folder, load)  # another process may have built it meanwhile
            if ok:
                artifact, manifest = result
                return artifact, {**_info(manifest, "reused", folder), "waited_s": waited_s}
            status = "built" if result == MISSING else f"rebuilt: {result}"
            _clean_stale(root, name)
            tmp = root / f".{name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                t0 = time.perf_counter()
                info = dict(build(tmp) or {})
                info["build_seconds"] = time.perf_counter() - t0
                manifest = {
                    "kind": kind, "name": name, "config": config_dict(config),
                    "build_id": uuid.uuid4().hex,
                    "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "builder": {"pid": os.getpid(), "host": socket.gethostname()},
                    "info": info,
                    "files": {rel: sha256_file(tmp / rel) for rel in _files(tmp)},
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
                manifest = read_manifest(tmp)  # what a later load sees (JSON-normalised facts)
                _publish(tmp, folder)
            finally:
                if tmp.exists():
                    _remove(tmp)
            return load(folder), _info(manifest, status, folder)
