"""A full disk, everywhere: every command that writes ends with one line and a non-zero exit, no
traceback, and no partial output: no ``*.tmp`` file, no empty or cut target, no half-made run
folder; a run marks its run.json ``interrupted`` when it can still be written (else leaves it as
it was) and keeps every complete record, never a cut last line.

Two kinds of test. The stub tests (fast, anywhere) make the writes under one folder fail with
ENOSPC at the write (part of the bytes land first, as on a real disk), at the fsync or at the
rename, by wrapping ``os.write``, ``os.fsync``, ``os.replace`` and ``os.pwrite``. The ``slow``
tests run the real ``harness`` command on a small tmpfs that fills up, mounted in a private user
and mount namespace (``unshare --user --map-root-user --mount``, no root needed); they are
skipped where such a namespace cannot be made.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cli import main
from harness.results import Record, RecordWriter, read_records, write_json
from harness.results.baseline import save_baseline
from harness.results.store import StoreWriteError, overwrite_json_in_place, write_file_atomic
from harness.run.session import RunSession
from synthetic_runs import ok_record, standard_run, write_run

ROOT = Path(__file__).resolve().parent.parent
NO_SPACE = os.strerror(errno.ENOSPC)


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, NO_SPACE)


class StubDisk:
    """Writes to files under ``root`` fail with ENOSPC once ``full`` is set, at the step ``at``:

    - ``write``: ``os.write`` takes half of what it is given, then fails (a full disk takes part
      of a line); an overwrite in place (``os.pwrite``) still works, as over allocated blocks;
    - ``fsync``: ``os.fsync`` fails (delayed allocation finds no space);
    - ``rename``: ``os.replace`` fails;
    - ``all``: every one of them, and ``os.pwrite`` too (refused before a byte is written).
    """

    def __init__(self, monkeypatch, root: Path, at: str, full: bool = False):
        self.root, self.at, self.full = str(root), at, full
        self.hits = 0
        real = SimpleNamespace(write=os.write, pwrite=os.pwrite, fsync=os.fsync, replace=os.replace)

        def write(fd, data):
            if self._hit(fd, "write"):
                if len(data) > 1:
                    return real.write(fd, bytes(memoryview(data)[: len(data) // 2]))
                raise _no_space()
            return real.write(fd, data)

        def pwrite(fd, data, offset):
            if self._hit(fd, "all"):
                raise _no_space()
            return real.pwrite(fd, data, offset)

        def fsync(fd):
            if self._hit(fd, "fsync"):
                raise _no_space()
            return real.fsync(fd)

        def replace(src, dst, **kw):
            if self.full and self.at in ("rename", "all") and str(dst).startswith(self.root):
                self.hits += 1
                raise _no_space()
            return real.replace(src, dst, **kw)

        for name, fn in (("write", write), ("pwrite", pwrite), ("fsync", fsync), ("replace", replace)):
            monkeypatch.setattr(os, name, fn)

    def _hit(self, fd: int, step: str) -> bool:
        if not self.full or self.at not in (step, "all"):
            return False
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        if path.startswith(self.root):
            self.hits += 1
            return True
        return False


def tmp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if ".tmp" in p.name)


def one_error_line(err: str, *fragments: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), err
    for fragment in (NO_SPACE, *fragments):
        assert fragment in lines[0], (fragment, err)
    return lines[0]


def complete_lines(path: Path) -> list[dict]:
    """Every line of a records file, each a whole JSON object; the file ends with a newline."""
    data = Path(path).read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"a cut last line is left: {data[-80:]!r}"
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run, two shards of one sweep and a saved baseline, outside any full disk."""
    root = tmp_path_factory.mktemp("full-disk-world")
    standard_run(root / "run_a", seed=0)
    for i, ns in ((1, (64,)), (2, (256,))):
        folder = write_run(root / f"shard{i}", [ok_record(v, n, [1.0, 1.1, 0.9]) for n in ns for v in ("base", "fast")])
        meta = json.loads((folder / "run.json").read_text())
        meta.update(shard=f"{i}/2", state="finished",
                    cases=[{"suite": "toy", "variant": v, "params": {"n": n}} for n in ns for v in ("base", "fast")])
        (folder / "run.json").write_text(json.dumps(meta))
    save_baseline(root / "run_a", "kept", root / "bl")
    return root


# --------------------------------------------------------------------------- stubs: the store
STEPS = ["write", "fsync", "rename"]


@pytest.mark.parametrize("at", STEPS)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_write_json_is_whole_or_not_at_all(tmp_path, monkeypatch, at, existing):
    target = tmp_path / "run.json"
    if existing:
        write_json(target, {"state": "running"})
    before = target.read_bytes() if existing else None
    disk = StubDisk(monkeypatch, tmp_path, at, full=True)
    with pytest.raises(StoreWriteError) as caught:
        write_json(target, {"state": "interrupted", "cases": list(range(500))})
    assert disk.hits and caught.value.errno == errno.ENOSPC and caught.value.strerror == NO_SPACE
    assert isinstance(caught.value, OSError) and caught.value.filename == str(target)
    assert tmp_files(tmp_path) == []
    assert (target.read_bytes() if target.exists() else None) == before


@pytest.mark.parametrize("at", STEPS)
def test_write_file_atomic_leaves_no_partial_file(tmp_path, monkeypatch, at):
    StubDisk(monkeypatch, tmp_path, at, full=True)
    with pytest.raises(StoreWriteError):
        write_file_atomic(tmp_path / "out.md", "x" * 10_000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("at", ["write", "rename"])
def test_run_json_is_rewritten_in_place_when_no_temporary_file_fits(tmp_path, monkeypatch, at):
    """No space for run.json.tmp, but the new state fits in the old file's own bytes."""
    target = tmp_path / "run.json"
    meta = {"state": "running", "cases": [{"suite": "toy", "variant": "ok", "params": {"n": n}} for n in range(20)]}
    write_json(target, meta)
    disk = StubDisk(monkeypatch, tmp_path, at, full=True)
    write_json(target, {**meta, "state": "interrupted", "status_counts": {"ok": 3}}, in_place_fallback=True)
    assert disk.hits
    assert json.loads(target.read_text()) == {**meta, "state": "interrupted", "status_counts": {"ok": 3}}
    assert tmp_files(tmp_path) == []


def test_an_in_place_rewrite_that_fails_or_does_not_fit_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    write_json(target, {"state": "running", "pad": "x" * 50})
    before = target.read_bytes()
    disk = StubDisk(monkeypatch, tmp_path, "write", full=True)
    with pytest.raises(StoreWriteError):  # does not fit in the old bytes
        write_json(target, {"state": "interrupted", "pad": "x" * 5000}, in_place_fallback=True)
    assert target.read_bytes() == before and tmp_files(tmp_path) == []
    disk.at = "all"  # fits, but the overwrite itself is refused
    with pytest.raises(StoreWriteError):
        write_json(target, {"state": "interrupted"}, in_place_fallback=True)
    assert target.read_bytes() == before and tmp_files(tmp_path) == []
    assert not overwrite_json_in_place(tmp_path / "missing.json", {})


@pytest.mark.parametrize("at", ["write", "fsync"])
def test_a_record_that_cannot_be_written_is_cut_off_again(tmp_path, monkeypatch, at):
    disk = StubDisk(monkeypatch, tmp_path, at)
    first, second, third = (ok_record(v, 8, [1.0, 1.1, 0.9]) for v in ("a", "b", "c"))
    with RecordWriter(tmp_path) as writer:
        writer.write(first)
        size = (tmp_path / "records.jsonl").stat().st_size
        disk.full = True
        with pytest.raises(StoreWriteError) as caught:
            writer.write(second)
        assert caught.value.errno == errno.ENOSPC and disk.hits
        assert (tmp_path / "records.jsonl").stat().st_size == size, "a cut line was left"
        disk.full = False  # space again: the writer goes on where the last whole line ended
        writer.write(third)
    assert [r["variant"] for r in complete_lines(tmp_path / "records.jsonl")] == ["a", "c"]
    assert [r.variant for r in read_records(tmp_path)] == ["a", "c"]


# --------------------------------------------------------------------------- stubs: harness run
class _FillsTheDisk:
    """An executor whose ``at``-th case fills the (stub) disk; every case is ``ok``."""

    def __init__(self, disk: StubDisk, at: int, folder: Path):
        self.disk, self.at, self.folder, self.n = disk, at, folder, 0
        self.run_json_before: bytes | None = None

    def run(self, case, timeout_s=None):
        self.n += 1
        if self.n == self.at:
            self.run_json_before = (self.folder / "run.json").read_bytes()
            self.disk.full = True
        return Record(suite=case.suite, variant=case.variant, params=case.params_dict, key=case.key,
                      device=case.device, status="ok")

    def close(self):
        pass


RUN_ARGS = ["--variant", "ok", "--param", "n=8,16,24", "--quiet", "--no-progress", "--threads", "1"]


# at: the failing step; kept: the records that reach the disk; marked: run.json says interrupted
@pytest.mark.parametrize("at,kept,marked", [("write", 1, True), ("fsync", 1, False), ("rename", 2, True),
                                            ("all", 1, False)])
def test_a_run_on_a_full_disk_is_one_line_and_keeps_its_records(toy_suite_file, tmp_path, monkeypatch, capsys,
                                                                  at, kept, marked):
    out = tmp_path / "disk" / "run"
    disk = StubDisk(monkeypatch, tmp_path / "disk", at)
    executor = _FillsTheDisk(disk, 2, out)
    monkeypatch.setattr(RunSession, "_make_executor", lambda self: executor)
    code = main(["run", str(toy_suite_file), *RUN_ARGS, "--out", str(out)])
    disk.full = False
    _, err = capsys.readouterr()
    assert code == 2 and disk.hits
    line = one_error_line(err, f"cannot write to run folder {out}: ")
    assert ("the run is marked interrupted" in line) == marked, line
    assert [r["params"]["n"] for r in complete_lines(out / "records.jsonl")] == [8, 16][:kept]
    assert tmp_files(tmp_path) == [] and not (out / "running.json").exists()
    meta = json.loads((out / "run.json").read_text())
    if marked:
        assert meta["state"] == "interrupted" and not meta["finished"] and meta["status_counts"] == {"ok": kept}
        # once there is space, --resume runs the rest; no case is taken for 'crashed'
        monkeypatch.setattr(RunSession, "_make_executor", lambda self: _FillsTheDisk(disk, 0, out))
        assert main(["run", "--resume", str(out), "--no-progress", "--quiet"]) == 0, capsys.readouterr().err
        records = complete_lines(out / "records.jsonl")
        assert sorted(r["params"]["n"] for r in records) == [8, 16, 24] and {r["status"] for r in records} == {"ok"}
        assert json.loads((out / "run.json").read_text())["state"] == "finished"
    else:  # not even an overwrite in place: run.json as it was, never empty or cut
        assert (out / "run.json").read_bytes() == executor.run_json_before and meta["state"] == "running"


def test_a_run_that_cannot_write_its_run_json_leaves_no_folder(toy_suite_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "disk" / "new" / "run"
    (tmp_path / "disk").mkdir()
    StubDisk(monkeypatch, tmp_path / "disk", "write", full=True)
    assert main(["run", str(toy_suite_file), *RUN_ARGS, "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, f"cannot write to run folder {out}: ")
    assert list((tmp_path / "disk").iterdir()) == []


def test_a_run_whose_environment_cannot_be_written_is_marked_interrupted(toy_suite_file, tmp_path, monkeypatch,
                                                                          capsys):
    """run.json is written, then the disk is full: environment.json fails, run.json says interrupted."""
    from harness.results import store

    out = tmp_path / "disk" / "run"
    disk = StubDisk(monkeypatch, tmp_path / "disk", "write")
    real = store.write_file_atomic

    def fill_after_run_json(path, data):
        real(path, data)
        disk.full = disk.full or Path(path).name == "run.json"

    monkeypatch.setattr(store, "write_file_atomic", fill_after_run_json)
    assert main(["run", str(toy_suite_file), *RUN_ARGS, "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, f"cannot write to run folder {out}: ", "marked interrupted")
    assert json.loads((out / "run.json").read_text())["state"] == "interrupted"
    assert tmp_files(tmp_path) == [] and not (out / "environment.json").exists()


# --------------------------------------------------------------------------- stubs: the other commands
@pytest.mark.parametrize("at", STEPS)
def test_export_baseline_and_merge_on_a_full_disk(world, tmp_path, monkeypatch, capsys, at):
    disk_root = tmp_path / "disk"
    disk_root.mkdir()
    (disk_root / "existing.md").write_text("old\n")
    shutil.copy(world / "bl" / "kept.json", disk_root / "kept.json")
    (disk_root / "empty").mkdir()
    before = {p.name: p.read_bytes() for p in disk_root.iterdir() if p.is_file()}
    StubDisk(monkeypatch, disk_root, at, full=True)
    commands = [
        (["export", str(world / "run_a"), "-o", str(disk_root / "new.md")], "--output"),
        (["export", str(world / "run_a"), "-o", str(disk_root / "existing.md")], "--output"),
        (["export", str(world / "run_a"), "--format", "pytest-benchmark", "--storage", str(disk_root / "st")],
         "--storage"),
        (["baseline", "save", str(world / "run_a"), "--name", "b", "--dir", str(disk_root / "bl" / "x")],
         "cannot write baseline"),
        (["baseline", "save", str(world / "run_a"), "--name", "kept", "--force", "--dir", str(disk_root)],
         "cannot write baseline"),
        (["merge", str(world / "shard1"), str(world / "shard2"), "--out", str(disk_root / "merged")], "cannot write"),
        (["merge", str(world / "shard1"), str(world / "shard2"), "--out", str(disk_root / "empty")], "cannot write"),
    ]
    if at == "rename":  # the report page goes through Path.write_text (test_bad_input fails that one)
        commands.append((["report", str(world / "run_a"), "-o", str(disk_root / "r.html")], "--output"))
    for argv, fragment in commands:
        code = main(argv)
        _, err = capsys.readouterr()
        assert code == 2, (argv, err)
        one_error_line(err, fragment)
        assert sorted(p.name for p in disk_root.iterdir()) == ["empty", "existing.md", "kept.json"], argv
        assert {p.name: p.read_bytes() for p in disk_root.iterdir() if p.is_file()} == before, argv
        assert list((disk_root / "empty").iterdir()) == [], argv


# --------------------------------------------------------------------------- a real full disk (tmpfs)
@functools.lru_cache(maxsize=1)
def _tmpfs_unavailable() -> str | None:
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return "needs Linux and unshare (util-linux) to mount a small tmpfs in a user namespace"
    with tempfile.TemporaryDirectory() as point:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                'mount -t tmpfs -o size=64k tmpfs "$1"', "sh", point],
                               capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace here (unshare: {probe.stderr.strip()[:160]})"
    return None


# In the namespace: mount a small tmpfs on $DISK, run $BEFORE, fill the disk (leaving $FREE_KB),
# run the command, copy what is on the disk to $OUT/disk; then $AFTER (its own output), $OUT/after.
FULL_DISK_SCRIPT = r'''
mount -t tmpfs -o size=512k tmpfs "$DISK" || exit 97
sh -c "$BEFORE" || exit 98
if [ "$FILL" = 1 ]; then
    dd if=/dev/zero of="$DISK/.filler" bs=4k 2>/dev/null
    if [ "$FREE_KB" -gt 0 ]; then truncate -s "-${FREE_KB}K" "$DISK/.filler"; fi
fi
"$@" >"$OUT/stdout" 2>"$OUT/stderr"; echo $? >"$OUT/rc"
mkdir "$OUT/disk" && cp -a "$DISK/." "$OUT/disk/" && rm -f "$OUT/disk/.filler"
if [ -n "$AFTER" ]; then
    sh -c "$AFTER" >"$OUT/stdout2" 2>"$OUT/stderr2"; echo $? >"$OUT/rc2"
    mkdir "$OUT/after" && cp -a "$DISK/." "$OUT/after/" && rm -f "$OUT/after/.filler"
fi
'''


def on_full_disk(tmp_path: Path, argv: list[str], *, before: str = "", after: str = "", fill: bool = True,
                 free_kb: int = 0, env: dict[str, str] | None = None,
                 script_env: dict[str, str] | None = None) -> SimpleNamespace:
    """Run ``harness ARGV`` with a tmpfs at ``tmp_path/disk`` that is full (``fill``) or that the
    command fills; what the disk held afterwards is copied to ``.disk`` (and after ``after`` ran,
    with space again if it frees some, to ``.after``)."""
    why = _tmpfs_unavailable()
    if why:
        pytest.skip(why)
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    variables = {"DISK": str(disk), "OUT": str(out), "BEFORE": before, "AFTER": after, "FILL": "1" if fill else "0",
                 "FREE_KB": str(free_kb), "PY": sys.executable, **(script_env or {})}
    command = [sys.executable, "-m", "harness", *argv]
    if env:  # for the command alone, not for $BEFORE and $AFTER
        command = ["env", *(f"{k}={v}" for k, v in env.items()), *command]
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", FULL_DISK_SCRIPT, "sh", *command]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **variables}, capture_output=True, text=True, timeout=900)
    assert (out / "rc").is_file(), f"the command did not run on the tmpfs (exit {done.returncode}): {done.stderr[-2000:]}"
    read = lambda name: (out / name).read_text() if (out / name).is_file() else None  # noqa: E731
    return SimpleNamespace(rc=int(read("rc")), err=read("stderr"), disk=out / "disk", disk_path=disk,
                           rc2=int(read("rc2")) if read("rc2") else None, err2=read("stderr2"), after=out / "after")


FILL_SUITE = '''
import os

import torch

from harness import Metric, Profile, Suite, Timing, Workload, variant


def fill(path):
    """Write until the disk is full, to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 8, 1):
            try:
                while True:
                    os.write(fd, b"\\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


class Fill(Suite):
    """Its case at n=$FILL_AT_N fills the disk while it prepares."""

    name = "fill"
    grid = {"n": [8, 16, 24]}
    profiles = {"quick": Profile(grid={"n": [8, 16, 24]}, timing=Timing(warmup_s=0, budget_s=0.01, min_runs=3))}
    reference = "ok"
    metrics = [Metric("score", "points", "higher")]
    timing = Timing(warmup_s=0, budget_s=0.01, min_runs=3)

    def prepare(self, params, device):
        if params["n"] == int(os.environ.get("FILL_AT_N") or 0):
            fill(os.environ["FILL_PATH"])
        return torch.ones(params["n"], params["n"])

    @variant()
    def ok(self, state, params):
        return Workload(lambda: state @ state)
'''


@pytest.mark.slow
@pytest.mark.parametrize("cases", [3, 50], ids=["small-plan", "large-plan"])
def test_harness_run_on_a_real_full_disk(write_suite, tmp_path, cases):
    """The second case fills the disk; its record does not fit. One line, exit 2, run.json
    interrupted, the first record whole, no cut line, no temporary file; --resume finishes the run
    once there is space. With a large plan run.json.tmp cannot fit either and run.json is
    rewritten over its own bytes."""
    suite = write_suite("fill_suite", FILL_SUITE)
    disk = tmp_path / "disk"
    ns = ",".join(str(8 * (i + 1)) for i in range(cases))
    after = (f'rm -f "$DISK/.filler" && "$PY" -m harness run --resume "$DISK/run" --no-progress --quiet'
             if cases == 3 else "")
    got = on_full_disk(tmp_path, ["run", str(suite), "--param", f"n={ns}", "--no-progress", "--quiet",
                                  "--threads", "1", "--out", str(disk / "run")],
                       fill=False, after=after, env={"FILL_AT_N": "16", "FILL_PATH": str(disk / ".filler")})
    assert got.rc == 2, got.err
    one_error_line(got.err, f"cannot write to run folder {disk / 'run'}: ", "the run is marked interrupted")
    run = got.disk / "run"
    assert [r["params"]["n"] for r in complete_lines(run / "records.jsonl")] == [8]
    assert tmp_files(got.disk) == [] and not (run / "running.json").exists()
    text = (run / "run.json").read_text()
    meta = json.loads(text)
    assert meta["state"] == "interrupted" and meta["status_counts"] == {"ok": 1} and meta["n_cases"] == cases
    if cases == 50:
        assert "\n  " not in text, "expected the rewrite in place (no room for run.json.tmp)"
    else:
        assert got.rc2 == 0, got.err2
        assert "Traceback" not in got.err2
        records = complete_lines(got.after / "run" / "records.jsonl")
        assert [r["params"]["n"] for r in records] == [8, 16, 24] and {r["status"] for r in records} == {"ok"}
        assert json.loads((got.after / "run" / "run.json").read_text())["state"] == "finished"
        assert tmp_files(got.after) == []


@pytest.mark.slow
def test_harness_run_that_cannot_start_on_a_full_disk(write_suite, tmp_path):
    suite = write_suite("fill_suite", FILL_SUITE)
    out = tmp_path / "disk" / "runs" / "r1"
    got = on_full_disk(tmp_path, ["run", str(suite), "--no-progress", "--quiet", "--threads", "1", "--out", str(out)])
    assert got.rc == 2, got.err
    one_error_line(got.err, f"cannot write to run folder {out}: ")
    assert sorted(p.name for p in got.disk.iterdir()) == [], "a half-made run folder was left"


# (argv with {disk} and {world}, what is on the disk before it fills, the free KB, a fragment of the line)
COMMANDS = {
    "baseline-new-folder": (["baseline", "save", "{world}/run_a", "--name", "b1", "--dir", "{disk}/bl/x"], "", 0,
                            "cannot write baseline"),
    "baseline-replace": (["baseline", "save", "{world}/run_a", "--name", "kept", "--force", "--dir", "{disk}/bl"],
                         'mkdir "$DISK/bl" && cp "$WORLD/bl/kept.json" "$DISK/bl/"', 0, "cannot write baseline"),
    "report-o": (["report", "{world}/run_a", "-o", "{disk}/r.html"], "", 0, "--output"),
    "report-into-run": (["report", "{disk}/run_a"], 'cp -a "$WORLD/run_a" "$DISK/"', 0, "--output"),
    "export-o-new": (["export", "{world}/run_a", "-o", "{disk}/t.md"], "", 0, "--output"),
    "export-o-existing": (["export", "{world}/run_a", "-o", "{disk}/t.md"], 'echo old > "$DISK/t.md"', 0, "--output"),
    "export-storage": (["export", "{world}/run_a", "--format", "pytest-benchmark", "--storage", "{disk}/st"], "", 0,
                       "--storage"),
    "merge": (["merge", "{world}/shard1", "{world}/shard2", "--out", "{disk}/m"], "", 0, "cannot write"),
    "merge-4k-free": (["merge", "{world}/shard1", "{world}/shard2", "--out", "{disk}/m"], "", 4, "cannot write"),
    "merge-8k-free": (["merge", "{world}/shard1", "{world}/shard2", "--out", "{disk}/m"], "", 8, "cannot write"),
    "merge-into-empty-folder": (["merge", "{world}/shard1", "{world}/shard2", "--out", "{disk}/m"],
                                'mkdir "$DISK/m"', 4, "cannot write"),
}


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_on_a_real_full_disk(world, tmp_path, name):
    """One line, exit 2, and the disk holds what it held before: no .tmp, no empty or partial
    target, no half-made folder (an empty --out that was there stays, empty)."""
    argv, before, free_kb, fragment = COMMANDS[name]
    disk = tmp_path / "disk"
    argv = [a.replace("{disk}", str(disk)).replace("{world}", str(world)) for a in argv]
    reference = tmp_path / "reference"  # what the disk holds before the command
    reference.mkdir()
    if before:
        subprocess.run(["sh", "-c", before], env={**os.environ, "DISK": str(reference), "WORLD": str(world)},
                       check=True)
    got = on_full_disk(tmp_path, argv, before=before, free_kb=free_kb, script_env={"WORLD": str(world)})
    assert got.rc == 2, got.err
    one_error_line(got.err, fragment)
    assert tmp_files(got.disk) == []
    assert _tree(got.disk) == _tree(reference)
