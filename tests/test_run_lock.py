"""One writer per run folder: a run, its --resume and merge hold the folder's lock; a second writer
gets one line and exit 2, and nothing it would have measured is doubled."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.results import load_results
from harness.results.store import FolderBusy, RunFolderLock
from harness.run.session import RunSession

SWEEP = ["--variant", "ok", "--param", "n=8,16,24", "--quiet", "--no-progress"]


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def killed_run(toy_suite_file, tmp_path, capsys) -> Path:
    """A toy run of three cases as a SIGKILL leaves it: one record, run.json still 'running'."""
    folder = tmp_path / "run"
    assert main(["run", str(toy_suite_file), *SWEEP, "--out", str(folder)]) == 0
    capsys.readouterr()
    lines = (folder / "records.jsonl").read_text().splitlines()
    (folder / "records.jsonl").write_text(lines[0] + "\n")
    meta = json.loads((folder / "run.json").read_text())
    meta.update(state="running", finished=False, pid=2**22 + 12345)  # a pid no process has
    (folder / "run.json").write_text(json.dumps(meta))
    return folder


def test_a_second_resume_is_refused_while_the_first_holds_the_folder(killed_run, capsys):
    first = RunSession.resume(killed_run)
    before = (killed_run / "records.jsonl").read_text()
    err = _one_line_error(capsys, ["run", "--resume", str(killed_run)])
    assert err == (f"harness: error: run folder {killed_run} is being written by another harness process "
                   f"(a run, --resume or merge); wait for it to end")
    assert (killed_run / "records.jsonl").read_text() == before, "the refused resume wrote a record"
    rs = first.run_remaining()
    assert [r.key.grid_dict["n"] for r in rs.records] == [8, 16, 24]
    assert rs.finished and not rs.duplicates
    again = load_results(killed_run)
    assert len(again.records) == 3 and not again.duplicates
    with RunFolderLock(killed_run):  # the finished run let go of the folder
        pass


def test_a_refused_resume_lets_go_of_the_folder(killed_run, capsys):
    """A resume that stops on a check (here: a plan that no longer matches) keeps no lock."""
    meta = json.loads((killed_run / "run.json").read_text())
    meta["cases"] = meta["cases"][:2]
    (killed_run / "run.json").write_text(json.dumps(meta))
    assert "the suites' plan has changed" in _one_line_error(capsys, ["run", "--resume", str(killed_run)])
    with RunFolderLock(killed_run):
        pass


def test_a_run_or_merge_into_a_folder_being_written_is_refused(toy_suite_file, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    with RunFolderLock(busy):
        err = _one_line_error(capsys, ["run", str(toy_suite_file), *SWEEP, "--out", str(busy)])
        assert "is being written by another harness process" in err
        shards = []
        for i in (1, 2):
            shards.append(str(tmp_path / f"s{i}"))
            assert main(["run", str(toy_suite_file), *SWEEP, "--shard", f"{i}/2", "--out", shards[-1]]) == 0
        capsys.readouterr()
        err = _one_line_error(capsys, ["merge", *shards, "--out", str(busy)])
        assert "is being written by another harness process" in err
    assert list(busy.iterdir()) == []
    assert main(["merge", *shards, "--out", str(busy)]) == 0


def test_the_lock_of_a_killed_writer_goes_with_it(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = textwrap.dedent(f"""
        import sys, time
        from harness.results.store import RunFolderLock
        lock = RunFolderLock({str(folder)!r})
        print("held", flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy):
            RunFolderLock(folder)
    finally:
        p.kill()
        p.wait(timeout=60)
    with RunFolderLock(folder):
        pass
