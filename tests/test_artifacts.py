"""The cached-artifact facility: manifest checks, rebuilds, the build lock, alarms held during builds."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from harness import artifacts as art
from lock_helpers import json_lines, start_python, wait_for_waiters

CONFIG = {"size": 4096, "seed": 7}


class Maker:
    """A small artifact: two files, one in a subfolder; counts its builds."""

    def __init__(self, root: Path):
        self.root = root
        self.builds = 0

    def build(self, folder: Path) -> dict:
        self.builds += 1
        data = bytes((i * 31 + CONFIG["seed"]) % 251 for i in range(CONFIG["size"]))
        (folder / "weights.bin").write_bytes(data)
        (folder / "sub").mkdir()
        (folder / "sub" / "labels.json").write_text(json.dumps({"labels": list(range(50))}))
        return {"loss": 0.25}

    @staticmethod
    def load(folder: Path) -> dict:
        return {"weights": (folder / "weights.bin").read_bytes(),
                "labels": json.loads((folder / "sub" / "labels.json").read_text())}

    def get(self):
        return art.cached_artifact("toy", CONFIG, self.build, self.load, root=self.root)

    @property
    def folder(self) -> Path:
        return self.root / art.config_key("toy", CONFIG)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_built_once_then_reused(tmp_path):
    maker = Maker(tmp_path)
    first, info = maker.get()
    assert info["cache"] == "built" and info["loss"] == 0.25 and info["build_seconds"] >= 0
    assert info["cache_path"] == str(maker.folder)
    manifest = art.read_manifest(maker.folder)
    assert set(manifest["files"]) == {"weights.bin", "sub/labels.json"}
    assert manifest["files"]["weights.bin"] == art.sha256_file(maker.folder / "weights.bin")
    assert manifest["config"] == CONFIG and manifest["build_id"] == info["build_id"]
    again, info2 = maker.get()
    assert info2["cache"] == "reused" and info2["build_id"] == info["build_id"] and info2["loss"] == 0.25
    assert again == first and maker.builds == 1
    assert _leftovers(tmp_path) == []  # no lock file, no temporary folder


def _truncate(folder):
    path = folder / "weights.bin"
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(folder):
    (folder / "weights.bin").write_bytes(b"not weights at all")


def _zero_block(folder):
    with open(folder / "weights.bin", "r+b") as fh:  # same size, same name, other bytes
        fh.seek(1024)
        fh.write(bytes(512))


def _missing(folder):
    (folder / "sub" / "labels.json").unlink()


def _extra(folder):
    (folder / "sub" / "stray.json").write_text("{}")


def _no_manifest(folder):
    (folder / art.MANIFEST).unlink()


def _bad_manifest(folder):
    (folder / art.MANIFEST).write_text('{"files": ')


def _file_not_folder(folder):
    import shutil

    shutil.rmtree(folder)
    folder.write_text("a file where the artifact folder belongs")


CORRUPTIONS = {
    "truncated": (_truncate, "weights.bin does not match its checksum"),
    "garbage": (_garbage, "weights.bin does not match its checksum"),
    "zeroed block": (_zero_block, "weights.bin does not match its checksum"),
    "missing file": (_missing, "sub/labels.json is missing"),
    "unexpected file": (_extra, "sub/stray.json is not in the manifest"),
    "no manifest": (_no_manifest, "no manifest"),
    "unreadable manifest": (_bad_manifest, "unreadable manifest"),
    "not a folder": (_file_not_folder, "not a folder"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruption_is_detected_and_rebuilt(tmp_path, kind):
    corrupt, why = CORRUPTIONS[kind]
    maker = Maker(tmp_path)
    clean, info = maker.get()
    corrupt(maker.folder)
    assert why in art.verify_artifact(maker.folder)
    rebuilt, info2 = maker.get()
    assert info2["cache"].startswith("rebuilt: ") and why in info2["cache"]
    assert maker.builds == 2 and info2["build_id"] != info["build_id"]
    assert rebuilt == clean  # the same content as the clean build
    assert art.verify_artifact(maker.folder) is None
    assert maker.get()[1]["cache"] == "reused"
    assert _leftovers(tmp_path) == []


def _folder_with_a_file(lock: Path) -> None:
    lock.mkdir()
    (lock / "stray.txt").write_text("left here by mistake")


LOCK_PATH_JUNK = {
    "empty folder": lambda lock: lock.mkdir(),
    "folder with a file": _folder_with_a_file,
    "fifo": lambda lock: os.mkfifo(lock),
    "dangling link": lambda lock: lock.symlink_to(lock.parent / "nowhere"),
}


@pytest.mark.parametrize("kind", list(LOCK_PATH_JUNK))
@pytest.mark.parametrize("artifact", ["missing", "corrupt"])
def test_a_lock_path_that_is_no_file_is_repaired(tmp_path, kind, artifact):
    """A folder (or fifo, or link) where the lock file belongs failed every build with
    IsADirectoryError and was never repaired: the lock removes it and is a plain file again."""
    maker = Maker(tmp_path)
    if artifact == "corrupt":
        maker.get()
        _garbage(maker.folder)
    lock = tmp_path / f".{maker.folder.name}.lock"
    LOCK_PATH_JUNK[kind](lock)
    held = []

    def build(folder):
        held.append(lock.is_file() and not lock.is_symlink())  # the build runs holding the lock
        return maker.build(folder)

    value, info = art.cached_artifact("toy", CONFIG, build, Maker.load, root=tmp_path)
    assert held == [True] and info["cache"] == ("built" if artifact == "missing" else "rebuilt: weights.bin "
                                                                                     "does not match its checksum")
    assert value == Maker.load(maker.folder) and art.verify_artifact(maker.folder) is None
    assert not (tmp_path / "nowhere").exists()  # the link's target was never created
    assert maker.get()[1]["cache"] == "reused"
    assert _leftovers(tmp_path) == []
    with art.artifact_lock(lock) as taken:
        assert taken is True and lock.is_file()


def test_a_lock_folder_that_cannot_be_removed_is_one_clean_error(tmp_path, monkeypatch):
    maker = Maker(tmp_path)
    lock = tmp_path / f".{maker.folder.name}.lock"
    _folder_with_a_file(lock)

    def refuse(path, *args, **kwargs):  # as for a folder owned by another user (root removes anything)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(art.shutil, "rmtree", refuse)
    with pytest.raises(OSError) as caught:
        maker.get()
    message = str(caught.value)
    assert type(caught.value) is OSError and "\n" not in message
    assert message == f"cache lock {lock} is a folder and cannot be removed (Permission denied); remove it by hand"
    assert maker.builds == 0 and lock.is_dir()


def test_unloadable_artifact_is_rebuilt(tmp_path):
    maker = Maker(tmp_path)
    clean, first = maker.get()

    def load_rejecting_first_build(folder):  # e.g. weights written by an older library version
        if art.read_manifest(folder)["build_id"] == first["build_id"]:
            raise ValueError("cannot parse weights")
        return Maker.load(folder)

    value, info = art.cached_artifact("toy", CONFIG, maker.build, load_rejecting_first_build, root=tmp_path)
    assert info["cache"].startswith("rebuilt: unloadable (ValueError: cannot parse weights")
    assert value == clean and maker.builds == 2


def test_failed_build_leaves_nothing_and_is_retried(tmp_path):
    maker = Maker(tmp_path)

    def broken(folder):
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        art.cached_artifact("toy", CONFIG, broken, Maker.load, root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert maker.get()[1]["cache"] == "built"


def test_stale_files_of_dead_builders_are_cleaned(tmp_path):
    maker = Maker(tmp_path)
    name = maker.folder.name
    for stale in (f".{name}.tmp-999999-dead", f".{name}.old-999999-dead"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "weights.bin").write_bytes(b"half")
    (tmp_path / f".{name}.lock").write_text("999999 gone\n")  # a lock file its holder left behind
    abandoned = tmp_path / ".other-abc.tmp-999999-x"  # another artifact's, no builder at work
    busy = tmp_path / ".busy-abc.tmp-1-x"  # another artifact's, its builder holds the lock
    abandoned.mkdir()
    busy.mkdir()
    with art.artifact_lock(tmp_path / ".busy-abc.lock") as held:
        assert held is True
        assert maker.get()[1]["cache"] == "built"
        assert _leftovers(tmp_path) == [".busy-abc.lock", busy.name]
    assert _leftovers(tmp_path) == [busy.name]


def test_a_lock_held_elsewhere_is_not_taken_without_blocking(tmp_path):
    lock = tmp_path / ".x.lock"
    with art.artifact_lock(lock):
        with art.artifact_lock(lock, blocking=False) as second:
            assert second is False
    with art.artifact_lock(lock, blocking=False) as third:
        assert third is True
    assert not lock.exists()


KILLED = textwrap.dedent("""
    import os, time
    from pathlib import Path
    from harness import artifacts as art

    def build(folder):
        (folder / "weights.bin").write_bytes(b"half written")
        Path(os.environ["STARTED"]).write_text("1")
        time.sleep(600)

    art.cached_artifact("toy", {"size": 4096, "seed": 7}, build, lambda f: None, root=Path(os.environ["ROOT"]))
""")


def test_a_builder_killed_half_way_leaves_nothing_that_counts(tmp_path):
    root, started = tmp_path / "cache", tmp_path / "started"
    root.mkdir()
    (proc,) = start_python(KILLED, 1, env={"ROOT": str(root), "STARTED": str(started)})
    try:
        for _ in range(6000):
            if started.exists() or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert started.exists(), proc.communicate()[1]
    finally:
        proc.kill()
        proc.communicate()
    maker = Maker(root)
    assert art.verify_artifact(maker.folder) == art.MISSING  # the half build never became the artifact
    assert [n for n in _leftovers(root) if n.startswith(f".{maker.folder.name}.tmp-")]  # its temporary folder
    _, info = maker.get()
    assert info["cache"] == "built" and art.verify_artifact(maker.folder) is None
    assert _leftovers(root) == []


def test_config_key_follows_the_config():
    assert art.config_key("toy", CONFIG) == art.config_key("toy", dict(reversed(list(CONFIG.items()))))
    assert art.config_key("toy", CONFIG) != art.config_key("toy", {**CONFIG, "seed": 8})
    assert art.config_key("toy", CONFIG) != art.config_key("other", CONFIG)
    with pytest.raises(TypeError, match="dataclass or a mapping"):
        art.config_key("toy", [1, 2])


def test_bad_artifact_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="plain folder name"):
        art.cached_artifact("toy", CONFIG, Maker(tmp_path).build, Maker.load, root=tmp_path, name="../escape")


def test_default_root_is_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    maker = Maker(tmp_path / "unused")
    _, info = art.cached_artifact("toy", CONFIG, maker.build, Maker.load)
    assert Path(info["cache_path"]).parent == tmp_path / "toy"


# --------------------------------------------------------------------------- listener
@pytest.fixture
def listener():
    calls: list[bool] = []
    previous = art.set_build_listener(calls.append)
    yield calls
    art.set_build_listener(previous)


def test_listener_hears_builds_only(tmp_path, listener):
    maker = Maker(tmp_path)
    maker.get()
    assert listener == [True, False]
    maker.get()  # a reuse is no build
    assert listener == [True, False]

    def broken(folder):
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        art.cached_artifact("toy", {"other": 1}, broken, Maker.load, root=tmp_path)
    assert listener == [True, False, True, False]


def test_nested_builds_are_one_build(tmp_path, listener):
    inner = Maker(tmp_path / "inner")

    def outer_build(folder):
        assert listener == [True]
        inner.get()
        assert listener == [True]  # the nested build does not end the outer one
        (folder / "x").write_text("x")

    art.cached_artifact("outer", {"n": 1}, outer_build, lambda f: None, root=tmp_path / "outer")
    assert listener == [True, False]


def test_a_failing_listener_does_not_break_the_build(tmp_path):
    def broken(state):
        raise OSError("parent pipe closed")

    previous = art.set_build_listener(broken)
    try:
        with pytest.warns(RuntimeWarning, match="parent pipe closed"):
            _, info = Maker(tmp_path).get()
    finally:
        art.set_build_listener(previous)
    assert info["cache"] == "built"


# --------------------------------------------------------------------------- case alarm
class _CaseAlarm(Exception):
    pass


def _alarm_pending() -> bool:
    """SIGALRM held back: pending on the main thread, or noted by the build guard's handler."""
    handler = signal.getsignal(signal.SIGALRM)
    noted = getattr(getattr(handler, "__self__", None), "pending", False)
    return signal.SIGALRM in signal.sigpending() or noted


def test_case_alarm_fires_only_once_the_artifact_is_complete(tmp_path):
    """The engine's case limit is a SIGALRM whose handler raises; during a build it waits."""
    maker = Maker(tmp_path)
    seen = {}

    def on_alarm(signum, frame):
        seen["artifact_at_alarm"] = art.verify_artifact(maker.folder)
        raise _CaseAlarm()

    def slow_build(folder):
        signal.setitimer(signal.ITIMER_REAL, 0.01)  # the case limit runs out in mid-build
        for _ in range(2000):  # wait (at most ~20 s) until the alarm has gone off
            if _alarm_pending():
                break
            time.sleep(0.01)
        seen["alarm_pending_in_build"] = _alarm_pending()
        return maker.build(folder)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        with pytest.raises(_CaseAlarm):
            art.cached_artifact("toy", CONFIG, slow_build, Maker.load, root=tmp_path)
        assert signal.getsignal(signal.SIGALRM) is on_alarm  # the engine's handler is back
        assert signal.SIGALRM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # and unblocked
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seen["alarm_pending_in_build"] is True
    assert seen["artifact_at_alarm"] is None  # complete and verified when the alarm went off
    assert Maker(tmp_path).get()[1]["cache"] == "reused"


def test_alarm_outside_builds_is_untouched(tmp_path):
    Maker(tmp_path).get()

    def on_alarm(signum, frame):
        raise _CaseAlarm()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        with pytest.raises(_CaseAlarm):
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            for _ in range(2000):
                Maker(tmp_path).get()  # reuses: no build, so no alarm is held back
                time.sleep(0.01)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- processes
CHILD = textwrap.dedent("""
    import json, os, time
    from pathlib import Path
    from harness import artifacts as art

    root, log = Path(os.environ["ROOT"]), os.environ["BUILD_LOG"]

    def build(folder):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(0.2)
        (folder / "data.bin").write_bytes(os.urandom(64))  # two builds could never agree

    value, info = art.cached_artifact("shared", {"n": 1}, build, lambda f: (f / "data.bin").read_bytes().hex(),
                                      root=root)
    print(json.dumps({"value": value, "cache": info["cache"], "build_id": info["build_id"]}))
""")


def test_processes_that_all_find_it_missing_build_it_once(tmp_path):
    root, log = tmp_path / "cache", tmp_path / "builds.log"
    root.mkdir()
    lock = root / f".{art.config_key('shared', {'n': 1})}.lock"
    with art.artifact_lock(lock):  # both find the artifact missing and wait for the lock
        procs = start_python(CHILD, 3, env={"ROOT": str(root), "BUILD_LOG": str(log)})
        wait_for_waiters(lock, 3, procs)
    results = [lines[0] for lines in json_lines(procs)]
    assert len(log.read_text().splitlines()) == 1  # one build
    assert sorted(r["cache"] for r in results) == ["built", "reused", "reused"]
    assert len({r["build_id"] for r in results}) == 1 and len({r["value"] for r in results}) == 1
    assert _leftovers(root) == []


TRAINING_SUITE = '''
import os
import signal
import time
from pathlib import Path

import torch

from harness import Profile, Suite, Timing, Workload, variant
from harness.artifacts import cached_artifact


def limit_runs_out():
    """The case time limit runs out while the model trains (the test says how)."""
    if os.environ.get("TRAINS_CLOCK_DIR"):  # in a worker: the parent's test clock passes the limit
        marks = Path(os.environ["TRAINS_CLOCK_DIR"])
        (marks / "build-started").touch()
        give_up = time.monotonic() + 300  # only if the parent never reads its clock
        while not (marks / "limit-passed").exists() and time.monotonic() < give_up:
            time.sleep(0.01)
    else:  # in process: the engine's case alarm goes off now, in mid-training
        signal.raise_signal(signal.SIGALRM)
        assert signal.SIGALRM in signal.sigpending(), "the case alarm was not held back during the build"


class Trains(Suite):
    """Trains its model in prepare, and the case time limit runs out during the training."""

    name = "trains"
    grid = {"n": [4]}
    profiles = {"quick": Profile(timing=Timing(warmup_s=0, budget_s=0.01, min_runs=1))}
    timing = Timing(warmup_s=0, budget_s=0.01, min_runs=1)

    def prepare(self, params, device):
        def build(folder):
            limit_runs_out()
            torch.save(torch.ones(params["n"]), folder / "weights.pt")
            if os.environ.get("TRAINS_CLOCK_DIR"):
                (Path(os.environ["TRAINS_CLOCK_DIR"]) / "build-ended").touch()

        return cached_artifact("trains", params, build, lambda f: torch.load(f / "weights.pt"))

    @variant()
    def uses(self, state, params):
        weights, info = state
        return Workload(lambda: weights * 2, info={"weights_cache": info["cache"]})
'''


def test_in_process_case_limit_lets_the_build_finish_into_the_cache(write_suite, tmp_path, monkeypatch):
    """The engine's own case alarm: the case that trains times out, but only once the model is
    cached, so the next run loads it (before, every run was cut off in mid-training). The alarm
    goes off in mid-training (the build raises SIGALRM, as the engine's timer would), so no
    margin of wall-clock time decides the outcome."""
    from harness.plan import plan_suite
    from harness.declare.registry import discover
    from harness.run.session import run_cases

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRAINS_CLOCK_DIR", raising=False)
    cls = discover(extra=[write_suite("trains_suite", TRAINING_SUITE)], builtin=False).get("trains")
    cases = plan_suite(cls, "quick", "cpu")
    # the limit is armed (its own timer never fires here); the build sets the alarm off
    (first,) = run_cases(cases, {"trains": cls}, tmp_path / "r1", run_id="r1", timeout_s=600, progress=False)
    assert first.status == "timeout", first.reason
    folder = tmp_path / "cache" / "trains" / art.config_key("trains", {"n": 4})
    assert art.verify_artifact(folder) is None  # complete, though the case ran out of time
    (second,) = run_cases(cases, {"trains": cls}, tmp_path / "r2", run_id="r2", progress=False)
    assert second.status == "ok" and second.info["weights_cache"] == "reused"


class BuildClock:
    """The parent's clock of the case time limit, for the isolated case: it stands still except
    while the worker builds (between the build's ``build-started`` and ``build-ended`` marks),
    where each reading moves it on by a quarter of the limit; once it has passed twice the limit
    it marks ``limit-passed`` and the build, which waits for that mark, finishes. So the build
    lasts longer than the limit on this clock, however fast or slow the machine is."""

    def __init__(self, marks: Path, limit_s: float):
        self.marks, self.limit_s, self.now = marks, limit_s, 0.0

    def __call__(self) -> float:
        if (self.marks / "build-started").exists() and not (self.marks / "build-ended").exists():
            self.now += self.limit_s / 4
            if self.now > 2 * self.limit_s:
                (self.marks / "limit-passed").touch()
        return self.now


def test_isolated_case_limit_is_held_while_the_worker_builds(write_suite, tmp_path, monkeypatch):
    """In a worker, the build tells the parent, which holds the case's time limit: the case that
    trains (longer than the limit, on the parent's clock) completes, and the model is in the cache."""
    from harness.plan import plan_suite
    from harness.declare.registry import discover
    from harness.run.executors import IsolatedExecutor
    from harness.run.session import run_cases

    marks = tmp_path / "marks"
    marks.mkdir()
    clock = BuildClock(marks, 0.5)
    monkeypatch.setattr(IsolatedExecutor, "clock", staticmethod(clock))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TRAINS_CLOCK_DIR", str(marks))
    cls = discover(extra=[write_suite("trains_suite", TRAINING_SUITE)], builtin=False).get("trains")
    cases = plan_suite(cls, "quick", "cpu")
    (first,) = run_cases(cases, {"trains": cls}, tmp_path / "r1", timeout_s=0.5, isolate=True)
    assert clock.now > 2 * 0.5  # the build outlasted the limit
    assert first.status == "ok", first.reason
    assert first.info["weights_cache"] == "built"
    folder = tmp_path / "cache" / "trains" / art.config_key("trains", {"n": 4})
    assert art.verify_artifact(folder) is None
