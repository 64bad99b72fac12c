"""Where baselines go and where a name is found: ``baseline save`` writes into ``--dir``, else
``$HARNESS_BASELINES_DIR``, else the current folder's ``baselines/`` (never the harness's own tree);
a name is looked up in ``--dir``, ``$HARNESS_BASELINES_DIR``, ``./baselines/``, the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.paths import ENV_BASELINES_DIR, PROJECT_ROOT, SHIPPED_BASELINES_DIR
from harness.results import load_results
from synthetic_runs import standard_run


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A user's project folder as the current folder, no $HARNESS_BASELINES_DIR."""
    monkeypatch.delenv(ENV_BASELINES_DIR, raising=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _device(name: str, **kw) -> str:
    return load_results(name, **kw).describe_device()


def _run(tmp_path: Path, device_name: str) -> Path:
    return standard_run(tmp_path / device_name.replace(" ", "-"), seed=0, device_name=device_name)


def test_save_from_a_user_folder_lands_in_its_baselines_not_the_checkout(tmp_path, elsewhere, capsys):
    shipped = _snapshot(SHIPPED_BASELINES_DIR)
    run = _run(tmp_path, "Local CPU")
    assert main(["baseline", "save", str(run), "--name", "mine"]) == 0  # ./baselines/ is created
    assert (elsewhere / "baselines" / "mine.json").is_file()
    assert str(elsewhere / "baselines" / "mine.json") in capsys.readouterr().err
    assert _snapshot(SHIPPED_BASELINES_DIR) == shipped and not (PROJECT_ROOT / "baselines" / "mine.json").exists()
    assert _device("mine") == "cpu (Local CPU)"
    assert main(["compare", "mine", str(run)]) == 0


def test_save_env_then_dir_override_the_current_folder(tmp_path, elsewhere, monkeypatch):
    run = _run(tmp_path, "Local CPU")
    monkeypatch.setenv(ENV_BASELINES_DIR, str(tmp_path / "env"))
    assert main(["baseline", "save", str(run), "--name", "a"]) == 0
    assert main(["baseline", "save", str(run), "--name", "b", "--dir", str(tmp_path / "given")]) == 0
    assert (tmp_path / "env" / "a.json").is_file() and (tmp_path / "given" / "b.json").is_file()
    assert not (elsewhere / "baselines").exists()


def test_shipped_baseline_is_found_from_anywhere(elsewhere, monkeypatch):
    assert _device("cpu-quick").startswith("cpu")  # from a user's folder, no ./baselines/
    monkeypatch.setenv(ENV_BASELINES_DIR, str(elsewhere / "empty"))
    assert _device("cpu-quick").startswith("cpu")  # $HARNESS_BASELINES_DIR does not hide the shipped ones
    monkeypatch.delenv(ENV_BASELINES_DIR)
    monkeypatch.chdir(PROJECT_ROOT)  # from the checkout: its baselines/ is the current folder's
    assert _device("cpu-quick").startswith("cpu")


def test_lookup_order_first_hit_wins(tmp_path, elsewhere, monkeypatch):
    """The same name in several folders: --dir, then $HARNESS_BASELINES_DIR, then ./baselines/,
    then the shipped one (cpu-quick is shipped; a user's own cpu-quick hides it)."""
    shipped = _snapshot(SHIPPED_BASELINES_DIR)
    shipped_device = _device("cpu-quick")
    for device, folder in (("Cwd CPU", elsewhere / "baselines"), ("Env CPU", tmp_path / "env"),
                           ("Dir CPU", tmp_path / "given")):
        assert main(["baseline", "save", str(_run(tmp_path, device)), "--name", "cpu-quick", "--dir", str(folder)]) == 0
    assert _device("cpu-quick") == "cpu (Cwd CPU)"  # ./baselines/ before the shipped one
    monkeypatch.setenv(ENV_BASELINES_DIR, str(tmp_path / "env"))
    assert _device("cpu-quick") == "cpu (Env CPU)"  # $HARNESS_BASELINES_DIR before ./baselines/
    assert _device("cpu-quick", baselines=tmp_path / "given") == "cpu (Dir CPU)"  # --dir before all
    monkeypatch.delenv(ENV_BASELINES_DIR)
    (elsewhere / "baselines" / "cpu-quick.json").unlink()
    assert _device("cpu-quick") == shipped_device  # nothing of the user's: the shipped one
    assert _snapshot(SHIPPED_BASELINES_DIR) == shipped


def test_unknown_name_names_the_folders_looked_in(tmp_path, elsewhere, monkeypatch, capsys):
    monkeypatch.setenv(ENV_BASELINES_DIR, str(tmp_path / "env"))
    assert main(["compare", "cpu-quik", str(_run(tmp_path, "Local CPU"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: unknown baseline 'cpu-quik'"), err
    assert (f"looked in {tmp_path / 'env'}, {elsewhere / 'baselines'}, {SHIPPED_BASELINES_DIR}" in err[0]
            and "did you mean 'cpu-quick'" in err[0])


def test_list_names_the_folders_in_lookup_order(tmp_path, elsewhere, monkeypatch, capsys):
    """Folder headers on stderr, in lookup order (a missing folder says so); one line per baseline on
    stdout, ``NAME: device, cases, profile``; a name an earlier folder hides says by which file."""
    monkeypatch.setenv(ENV_BASELINES_DIR, str(tmp_path / "env"))
    assert main(["baseline", "save", str(_run(tmp_path, "Env CPU")), "--name", "cpu-quick"]) == 0
    assert main(["baseline", "save", str(_run(tmp_path, "Env CPU")), "--name", "only-env"]) == 0
    (elsewhere / "baselines").mkdir()
    (elsewhere / "baselines" / "broken.json").write_text("{not json")
    capsys.readouterr()
    assert main(["baseline", "list", "--dir", str(tmp_path / "missing")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"harness: baselines in {tmp_path / 'missing'} (--dir): none (no such folder)",
        f"harness: baselines in {tmp_path / 'env'} (${ENV_BASELINES_DIR}):",
        f"harness: baselines in {elsewhere / 'baselines'} (current folder):",
        f"harness: baselines in {SHIPPED_BASELINES_DIR} (shipped with the harness):",
    ]
    lines = out.splitlines()
    assert lines[:2] == ["cpu-quick: cpu (Env CPU), 6 cases, profile quick", "only-env: cpu (Env CPU), 6 cases, profile quick"]
    assert lines[2].startswith("broken: unreadable (") and "corrupt" in lines[2]
    hidden = [line for line in lines[3:] if line.startswith("cpu-quick: ")]
    assert len(hidden) == 1 and hidden[0].endswith(f"(hidden by {tmp_path / 'env' / 'cpu-quick.json'})")


def test_list_from_the_checkout_names_its_folder_once(monkeypatch, capsys):
    monkeypatch.delenv(ENV_BASELINES_DIR, raising=False)
    monkeypatch.chdir(PROJECT_ROOT)
    assert main(["baseline", "list"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"harness: baselines in {PROJECT_ROOT / 'baselines'} "
                                "(current folder, shipped with the harness):"]
    assert any(line.startswith("cpu-quick: cpu") for line in out.splitlines())


def test_list_dir_that_is_a_file_is_one_line_exit_2(tmp_path, elsewhere, capsys):
    (tmp_path / "a_file.txt").write_text("x")
    assert main(["baseline", "list", "--dir", str(tmp_path / "a_file.txt")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"harness: error: --dir {tmp_path / 'a_file.txt'} is not a folder"]
