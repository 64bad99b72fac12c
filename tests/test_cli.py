"""The harness command: a real run, export, and every bad-input path (one line, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_a_run_folder_and_prints_tables(capsys, tmp_path, toy_suite_file):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "run", str(toy_suite_file), "--profile", "quick", "--device", "cpu",
                                "--variant", "ok,gpu_only,raises", "--out", str(out), "--no-progress")
    assert code == 1  # a case failed
    assert "1 case(s) did not succeed; exit 1" in err
    assert "### toy: latency [ms]" in stdout
    assert "| ok | raises |" in stdout  # one grid point: no row params, skipped column folded
    assert "Skipped: gpu_only (needs a CUDA device)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["environment.json", "records.jsonl", "run.json"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["finished"] and meta["status_counts"] == {"ok": 1, "skipped": 1, "failed": 1}
    assert meta["argv"] == ["harness", "run", str(toy_suite_file), "--profile", "quick", "--device", "cpu",
                            "--variant", "ok,gpu_only,raises", "--out", str(out), "--no-progress"]
    code, _, _ = run_cli(capsys, "run", str(toy_suite_file), "--device", "cpu", "--variant", "raises",
                         "--out", str(tmp_path / "again"), "--no-progress", "--quiet", "--allow-failures")
    assert code == 0
    env = json.loads((out / "environment.json").read_text())
    for key in ("git", "host", "cpu", "torch_threads", "python", "torch", "cuda", "cudnn", "device_name"):
        assert key in env
    assert "3 cases (1 failed, 1 ok, 1 skipped)" in err

    code, stdout, _ = run_cli(capsys, "export", str(out), "--format", "markdown", "--metric", "score")
    assert code == 0
    assert "### toy: score [points], higher is better; ratio to ok; device cpu" in stdout
    assert "| 512 (1.00x) | failed |" in stdout


def test_param_override_and_list(capsys, tmp_path, toy_suite_file):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "run", str(toy_suite_file), "--profile", "quick", "--device", "cpu",
                         "--variant", "ok", "--param", "n=4,2", "--out", str(out), "--no-progress", "--quiet")
    assert code == 0
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["params"]["n"] for r in rows] == [4, 2]
    code, stdout, _ = run_cli(capsys, "list", str(toy_suite_file))
    assert code == 0 and "toy:" in stdout and "gpu_only [requires cuda]" in stdout and "quick: n=[8]" in stdout


BAD_RUNS = [
    (["run", "attentoin"], "unknown suite 'attentoin' (did you mean 'attention'"),
    (["run", "attention", "--variant", "sofmax"], "unknown variant 'sofmax' (did you mean 'softmax'?)"),
    (["run", "attention", "--param", "seqlen=128"], "unknown param 'seqlen' (did you mean 'seq_len'?)"),
    (["run", "attention", "--param", "seq_len=long"], "--param seq_len: malformed value"),
    (["run", "attention", "--param", "causal=maybe"], "is not a boolean"),
    (["run", "attention", "--param", "seq_len"], "expected NAME=V1,V2"),
    (["run", "attention", "--profile", "quik"], "has no profile 'quik' (did you mean 'quick'?)"),
    (["run", "attention", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "attention", "-k", "nothing-matches-this"], "no case matches -k"),
    (["run", "attention", "--threads", "0"], "--threads must be at least 1"),
    (["run", "attention", "--timeout", "-1"], "--timeout must be a positive number"),
    (["run", "no/such/file.py"], "no such suite file or folder"),
    (["run", "attention", "--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize("argv,message", BAD_RUNS)
def test_bad_run_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    out = tmp_path / "never"
    code, stdout, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("harness: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing half-done


def test_cuda_without_gpu_is_bad_input(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli(capsys, "run", "attention", "--device", "cuda", "--out", str(tmp_path / "x"))
    assert code == 2 and "no CUDA device is available" in err


def test_out_folder_that_holds_a_run_is_refused(capsys, tmp_path):
    (tmp_path / "records.jsonl").write_text("")
    code, _, err = run_cli(capsys, "run", "attention", "--out", str(tmp_path))
    assert code == 2 and "already exists and is not empty" in err


def test_broken_suite_file_given_by_path(capsys, write_suite):
    path = write_suite("broken", "raise ImportError('no module named magic')\n")
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2 and "failed to load: ImportError: no module named magic" in err


def test_bad_export_input(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", str(tmp_path / "missing"))
    assert code == 2 and err == f"harness: error: no such run folder: {tmp_path / 'missing'}\n"

    (tmp_path / "corrupt").mkdir()
    good = json.dumps({"suite": "s", "variant": "v", "params": {}, "device": "cpu", "status": "ok", "schema_version": 2})
    (tmp_path / "corrupt" / "records.jsonl").write_text(good + "\n{oops\n" + good + "\n")
    code, _, err = run_cli(capsys, "export", str(tmp_path / "corrupt"))
    assert code == 2 and "line 2 is not valid JSON" in err

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "records.jsonl").write_text("")
    code, _, err = run_cli(capsys, "export", str(tmp_path / "empty"))
    assert code == 2 and "holds no records" in err


def test_export_bad_format_and_metric(capsys, tmp_path, toy_suite_file):
    out = tmp_path / "run"
    assert run_cli(capsys, "run", str(toy_suite_file), "--variant", "ok", "--device", "cpu", "--out", str(out),
                   "--no-progress", "--quiet")[0] == 0
    code, _, err = run_cli(capsys, "export", str(out), "--format", "markdwon")
    assert code == 2 and "unknown format 'markdwon' (did you mean 'markdown'?)" in err
    code, _, err = run_cli(capsys, "export", str(out), "--metric", "latncy")
    assert code == 2 and "run has no metric 'latncy' (did you mean 'latency'?)" in err


def test_truncated_run_exports_with_a_warning(capsys, tmp_path, toy_suite_file):
    out = tmp_path / "run"
    assert run_cli(capsys, "run", str(toy_suite_file), "--variant", "ok", "--device", "cpu", "--out", str(out),
                   "--no-progress", "--quiet", "--param", "n=2,3")[0] == 0
    records = out / "records.jsonl"
    records.write_text(records.read_text()[:-30])
    code, stdout, err = run_cli(capsys, "export", str(out), "--metric", "latency")
    assert code == 0
    assert "truncated" in err and "Fixed: n=2." in stdout and "| 3 |" not in stdout


def test_debug_shows_the_traceback(capsys):
    code, _, err = run_cli(capsys, "--debug", "run", "atention")
    assert code == 2 and "Traceback" in err


@pytest.mark.slow
def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "harness", "run", "nosuch"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["harness: error: unknown suite 'nosuch' (choose from 'attention')"] or \
        done.stderr.startswith("harness: error: unknown suite 'nosuch'")
