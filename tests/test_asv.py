"""asv drives the suites through the harness engine: real asv, on a temporary git repository.

``asv run --python=same`` over two commits records every quick-profile metric of the attention
suite (narrowed to one case by $HARNESS_ASV_PARAM) and of a probe suite; the probe's operation
asks for 3x the work in the second commit (the work it reports triples exactly) and its
higher-is-better score drops, and ``asv compare`` reports both as regressions (judged on these
exact metrics, not on wall-clock ones); ``asv publish`` writes the HTML. The adapter's
in-process behaviour (params, units, version, direction) is checked without asv.
"""

from __future__ import annotations

import json
import math
import sys
import subprocess
from pathlib import Path

import pytest

from asv_helpers import MACHINE, asv_exe, asv_project, run
from harness import asv_adapter
from harness.results import RecordWriter
from harness.declare.suite import Suite

ATTENTION_METRICS = ("latency", "peak_memory", "tflops", "throughput", "rel_error")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return asv_project(tmp_path_factory.getbasetemp() / "asv")


def _results(project, commit: str) -> dict:
    files = [p for p in project.results_dir.glob(f"{commit[:8]}-*.json")]
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    cols = data["result_columns"]
    return {name: dict(zip(cols, row)) for name, row in data["results"].items()}


# --------------------------------------------------------------------------- in-process
def _bench(cls):
    return asv_adapter.benchmark_class(cls)


def test_suites_are_not_benchmarks():
    from suites.attention import Attention

    for klass in (Suite, Attention):
        assert not [n for n in dir(klass) if n.startswith(("track_", "time_", "mem_", "peakmem_"))]
        for reserved in ("params", "param_names", "setup", "teardown", "setup_cache", "timeout", "version", "unit"):
            assert reserved not in vars(klass)


def test_attention_has_one_track_per_metric_with_units_and_version():
    from asv_runner.benchmarks._base import get_setup_cache_key

    from suites.attention import Attention
    from suites.normalization import Normalization

    bench = _bench(Attention)
    other = _bench(Normalization).track_latency.setup_cache
    assert get_setup_cache_key(other).startswith("normalization:")
    for metric in ATTENTION_METRICS:
        track = getattr(bench, f"track_{metric}")
        assert track.benchmark_name == f"attention.Attention.track_{metric}"
        assert track.version == Attention.benchmark_version()
        assert track.param_names[-1] == "variant"
        assert "performer[features=16]" in track.params[-1]
        # one setup_cache per suite module: asv runs it once and passes its value to all of them
        assert get_setup_cache_key(track.setup_cache) == get_setup_cache_key(bench.track_latency.setup_cache)
    assert get_setup_cache_key(bench.track_latency.setup_cache).startswith("attention:")
    assert bench.track_latency.setup_cache.timeout == bench.track_latency.timeout * len(Attention.__asv_layout__.cases)
    assert bench.track_latency.unit == "ms"
    assert bench.track_tflops.unit == "s/TFLOP"  # higher is better: recorded as 1/value


def test_adapter_imports_no_torch_and_reports_a_missing_profile():
    import subprocess
    import sys

    code = """if True:
        import sys
        from harness import Suite, Workload, Profile, variant
        class T(Suite):
            name = "t"; grid = {"n": [1, 2]}; profiles = {"quick": Profile()}
            @variant()
            def a(self, state, params): return Workload(lambda: None)
        class U(Suite):
            name = "u"; grid = {"n": [1]}
            @variant()
            def a(self, state, params): return Workload(lambda: None)
        assert not any(m == "asv" or m.startswith(("asv.", "asv_runner", "harness.asv")) for m in sys.modules)
        from harness.asv_adapter import benchmark_class
        assert benchmark_class(T).track_latency.params == [[1, 2], ["a"]]
        assert "torch" not in sys.modules
        try:
            benchmark_class(U)().track_latency()
        except RuntimeError as exc:
            print(exc)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no profile 'quick'" in out.stdout


def test_higher_is_better_is_inverted_so_a_drop_is_a_rise():
    assert asv_adapter.asv_value(2.0, "lower") == 2.0
    assert asv_adapter.asv_value(4.0, "higher") == 0.25
    assert asv_adapter.asv_value(3.6, "higher") > asv_adapter.asv_value(4.0, "higher")  # 10% drop
    assert math.isnan(asv_adapter.asv_value(0.0, "higher"))
    assert asv_adapter.inverted_unit("tokens/s") == "s/tokens"
    assert asv_adapter.inverted_unit("") == "1/value"


def test_profile_and_param_environment(monkeypatch):
    from suites.attention import Attention

    monkeypatch.setenv(asv_adapter.ENV_PARAM, "variant=linear,flash;causal=true;inputs=gaussian")
    lay = asv_adapter.layout(Attention)
    assert lay.params[lay.param_names.index("causal")] == (True,)
    assert lay.params[-1] == ("linear", "flash")
    assert len(lay.cases) == 2 * 2  # two passes x two variants
    monkeypatch.setenv(asv_adapter.ENV_PROFILE, "nightly")
    monkeypatch.delenv(asv_adapter.ENV_PARAM)
    lay = asv_adapter.layout(Attention)
    assert 32768 in lay.params[lay.param_names.index("seq_len")]


def _fake_record(case):
    from harness.results import Record

    return Record(suite=case.suite, variant=case.variant, params=case.params_dict, device="cpu", status="ok",
                  metrics={"latency": {"value": 1.0, "unit": "ms", "better": "lower", "kind": "time"}})


def _fake_measure(calls):
    def measure(classes, folder):
        cases = [c for cls in classes for c in cls.__asv_layout__.cases.values()]
        calls.append(cases)
        folder.mkdir(parents=True)
        records = [_fake_record(case) for case in cases]
        with RecordWriter(folder) as w:
            for record in records:
                w.write(record)
        return records

    return measure


def test_setup_cache_measures_each_case_once_for_every_metric(tmp_path, monkeypatch):
    """asv's setup_cache measures every case of the suite in one session; each track_ of each
    metric at each point only reads that measurement."""
    from suites.attention import Attention

    bench = _bench(Attention)
    calls = []
    monkeypatch.setattr(asv_adapter, "_measure", _fake_measure(calls))
    monkeypatch.chdir(tmp_path)
    cache = bench.track_latency.setup_cache()
    lay = Attention.__asv_layout__
    assert len(calls) == 1 and len(calls[0]) == len(lay.cases) > 1
    point = next(iter(lay.cases))
    instance = bench()
    for _ in range(2):  # a second read (asv's rounds) reads the same value
        bench.track_latency.setup(cache, *point)
        assert bench.track_latency(instance, cache, *point) == 1.0
    with pytest.raises(NotImplementedError, match="does not report tflops"):
        bench.track_tflops.setup(cache, *point)
    outside = tuple(v[-1] for v in lay.params)
    if outside not in lay.cases:
        with pytest.raises(NotImplementedError, match="not in the plan"):
            bench.track_latency.setup(cache, *outside)
    assert len(calls) == 1
    assert cache["format"] == asv_adapter.CACHE_FORMAT and Path(cache["run"]).parent == tmp_path / "harness-asv-records"


def test_a_measurement_is_a_complete_run_folder(tmp_path, monkeypatch):
    """asv measures through the run session: setup_cache leaves a run folder that export reads,
    and the track_ values are its records' (higher-is-better ones inverted)."""
    from harness.results import load_results
    from suites.attention import Attention

    monkeypatch.setenv(asv_adapter.ENV_PARAM, "variant=linear;causal=false;pass=forward")
    monkeypatch.setenv(asv_adapter.ENV_DEVICE, "cpu")
    monkeypatch.setenv(asv_adapter.ENV_THREADS, "1")
    monkeypatch.chdir(tmp_path)
    bench = _bench(Attention)
    cache = bench.track_latency.setup_cache()
    (folder,) = [p for p in tmp_path.rglob("run.json")]
    assert str(folder.parent) == cache["run"]
    run = load_results(folder.parent)
    assert run.finished and run.suites_meta["attention"]["reference"] == "softmax"
    assert run.environment["device"] == "cpu"
    assert len(run.records) == len(Attention.__asv_layout__.cases)
    by_key = {r.key: r for r in run.records}
    for point, case in Attention.__asv_layout__.cases.items():
        record = by_key[case.key]
        assert record.status == "ok" and record.metrics["latency"].kind == "time"
        for metric in ("latency", "throughput"):
            track = getattr(bench, f"track_{metric}")
            track.setup(cache, *point)
            value = record.metrics[metric]
            assert track(bench(), cache, *point) == asv_adapter.asv_value(value.value, value.better)


def test_a_benchmark_process_rebuilds_the_classes_from_setup_cache(tmp_path, monkeypatch):
    """A benchmark process, started by asv in the folder holding setup_cache's pickled value,
    rebuilds the classes from it: it imports no suite and no torch, and asv's own runner finds
    the benchmark, its params and its value there."""
    import pickle

    from suites.attention import Attention

    bench = _bench(Attention)
    monkeypatch.setattr(asv_adapter, "_measure", _fake_measure([]))
    monkeypatch.chdir(tmp_path)
    cache = bench.track_latency.setup_cache()
    (tmp_path / "cache.pickle").write_bytes(pickle.dumps(cache))
    lay = Attention.__asv_layout__
    index = list(__import__("itertools").product(*lay.params)).index(next(iter(lay.cases)))
    bench_dir = Path(asv_adapter.__file__).resolve().parent.parent / "benchmarks" / "asv_benchmarks"
    code = f"""if True:
        import json, sys
        from asv_runner.run import _run
        from asv_runner.discovery import get_benchmark_from_name
        b = get_benchmark_from_name({str(bench_dir)!r}, "attention.Attention.track_latency")
        assert b._params == {[list(v) for v in lay.params]!r}, b._params
        _run(({str(bench_dir)!r}, "attention.Attention.track_latency-{index}", "{{}}", "None", "out.json"))
        print(json.load(open("out.json")))
        assert "torch" not in sys.modules and not any(m.startswith("suites") for m in sys.modules)
    """
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.0"]


# --------------------------------------------------------------------------- real asv
@pytest.mark.slow
def test_asv_run_records_every_quick_metric_of_attention(project):
    for commit in project.commits[:2]:  # the third commit ran the probe suite only
        res = _results(project, commit)
        for metric in ATTENTION_METRICS:
            row = res[f"attention.Attention.track_{metric}"]
            values = [v for v in row["result"] if v is not None]
            assert values and all(isinstance(v, float) and v > 0 for v in values), (metric, row)
        for metric in ("latency", "peak_memory", "throughput", "score", "work"):
            row = res[f"asvprobe.AsvProbe.track_{metric}"]
            assert row["result"] and all(v is not None for v in row["result"]), (metric, row)
        # tflops is not reported by the probe (flops=0): skipped, shown as n/a, not failed
        assert all(v is None or math.isnan(v) for v in res["asvprobe.AsvProbe.track_tflops"]["result"])


@pytest.mark.slow
def test_each_case_measured_once_per_asv_run(project):
    sizes = project.probe_log.read_text().split()
    # one probe case (then two), three commits: one measurement each, although seven track_
    # benchmarks read it
    assert sizes == ["size=2", "size=2", "size=2", "size=3"]


@pytest.mark.slow
def test_benchmarks_json_has_units_and_the_benchmark_version(project):
    bench = json.loads((project.root / ".asv" / "results" / "benchmarks.json").read_text())
    assert bench["attention.Attention.track_latency"]["unit"] == "ms"
    assert bench["attention.Attention.track_throughput"]["unit"].startswith("s/")
    assert bench["asvprobe.AsvProbe.track_score"]["unit"] == "1/value"
    versions = {b["version"] for name, b in bench.items() if name.startswith("asvprobe.")}
    assert len(versions) == 1


@pytest.mark.slow
def test_asv_compare_shows_the_injected_regression(project):
    out = run([asv_exe(), "compare", project.commits[0], project.commits[1], "--machine", MACHINE, "--split"],
              project.root, project.env)
    worse = [ln for ln in out.splitlines() if ln.strip().lstrip("|").strip().startswith("+")]
    # the metrics the probe reports exactly (wall-clock ones move with the machine's load)
    exact = [ln for ln in worse if "track_work" in ln or "track_score" in ln]
    assert any("asvprobe.AsvProbe.track_work" in ln and "'sleep'" in ln for ln in exact), out
    assert any("asvprobe.AsvProbe.track_score" in ln for ln in exact), out  # a drop of a higher-is-better metric
    assert "got worse" in out
    # the untouched variant is not among them
    assert not any("'steady'" in ln for ln in exact), out


def _versions(project, commit: str) -> dict:
    (path,) = project.results_dir.glob(f"{commit[:8]}-*.json")
    data = json.loads(path.read_text())
    cols = data["result_columns"]
    return {name: dict(zip(cols, row))["version"] for name, row in data["results"].items() if name.startswith("asvprobe.")}


@pytest.mark.slow
def test_a_variant_edit_keeps_the_history_and_shows_the_step(project):
    """Commit 2 made the 'sleep' variant ask for 3x the work in the suite file: the benchmark
    version stayed, so the published graphs after commit 2 hold both commits, the step in
    'sleep' and 'steady' flat. The step is read from the work each call asks for, which the
    probe reports exactly (latency, a wall-clock time, only has to be there)."""
    v1, v2 = _versions(project, project.commits[0]), _versions(project, project.commits[1])
    assert v1 == v2
    latency = json.loads(project.outputs["graph2"])
    assert len(latency) == 2 and all(len(values) == 2 for _, values in latency), latency
    points = json.loads(project.outputs["graph2_work"])
    assert len(points) == 2, points
    (_, (sleep1, steady1)), (_, (sleep2, steady2)) = points
    assert sleep2 == pytest.approx(3 * sleep1) and sleep1 == pytest.approx(4.0)  # 2 ms x size 2
    assert steady2 == steady1 == pytest.approx(4.0)


@pytest.mark.slow
def test_a_grid_change_starts_a_new_history(project):
    v2, v3 = _versions(project, project.commits[1]), _versions(project, project.commits[2])
    assert v2["asvprobe.AsvProbe.track_latency"] != v3["asvprobe.AsvProbe.track_latency"]
    points = json.loads(project.outputs["graph3"])
    assert len(points) == 1 and len(points[0][1]) == 4, points  # (size 2, 3) x (sleep, steady)


@pytest.mark.slow
def test_asv_publish_writes_html(project):
    html = project.html_dir
    assert (html / "index.html").is_file()
    index = json.loads((html / "index.json").read_text())
    names = set(index["benchmarks"])
    assert {f"attention.Attention.track_{m}" for m in ATTENTION_METRICS} <= names
    graphs = list((html / "graphs").rglob("attention.Attention.track_latency.json"))
    assert graphs


@pytest.mark.slow
def test_asv_records_a_run_without_measuring_again(project):
    """As the nightly job does: run the suite once, then ``asv run`` with HARNESS_ASV_RECORDS
    pointing at the run folder (forkserver launch). asv's results equal the run's records (the
    median of its rounds; higher-is-better ones inverted) and nothing is measured again."""
    from harness.results import load_results

    root, env = project.root, dict(project.env)
    out = root / "results" / "nightly-run"
    run([sys.executable, "-m", "harness", "run", "asvprobe", "--profile", "quick", "--device", "cpu",
         "--threads", "1", "--rounds", "2", "--out", str(out), "--quiet", "--no-progress"], root, env)
    logged = project.probe_log.read_text()
    machine = "asv-records-box"
    run([asv_exe(), "machine", "--yes", "--machine", machine], root, env)
    env["HARNESS_ASV_RECORDS"] = str(out)
    run([asv_exe(), "run", "--python=same", "--set-commit-hash", project.commits[2], "--machine", machine,
         "--bench", "asvprobe", "--launch-method", "forkserver", "--show-stderr"], root, env)
    assert project.probe_log.read_text() == logged  # the variant was not called again
    (path,) = (root / ".asv" / "results" / machine).glob(f"{project.commits[2][:8]}-*.json")
    data = json.loads(path.read_text())
    cols = data["result_columns"]
    res = {name: dict(zip(cols, row)) for name, row in data["results"].items()}
    records = {(r.params["size"], r.variant): r for r in load_results(out).records}
    for metric in ("latency", "throughput", "peak_memory"):
        row = res[f"asvprobe.AsvProbe.track_{metric}"]
        sizes, variants = row["params"]
        expected = [asv_adapter.asv_value(records[(int(s), v.strip("'"))].metrics[metric].value,
                                          records[(int(s), v.strip("'"))].metrics[metric].better)
                    for s in sizes for v in variants]
        assert row["result"] == pytest.approx(expected, rel=1e-12), (metric, row["result"], expected)


@pytest.mark.slow
def test_managed_environment_config_builds_one_wheel_offline(tmp_path):
    """asv.conf.json for asv-managed environments: the benchmark package's parent holds no
    harness or suites (each commit's installed ones are measured); the dependencies are the
    environment's, installed once from a wheelhouse (every runtime dependency is in the matrix);
    each commit builds and installs only the project's wheel, offline and without dependencies.
    The build command itself runs here and leaves exactly one wheel, holding harness and suites."""
    import re
    import subprocess
    import tomllib
    import zipfile

    import asv.config

    from harness.paths import PROJECT_ROOT

    conf = asv.config.Config.load(str(PROJECT_ROOT / "asv.conf.json"))
    bench_parent = (PROJECT_ROOT / conf.benchmark_dir).parent
    assert not (bench_parent / "harness").exists() and not (bench_parent / "suites").exists()
    assert all("--no-deps" in c and "--no-index" in c for c in conf.build_command + conf.install_command)
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in deps}
    assert names <= {k.lower() for k in conf.matrix["req"]}, names - set(conf.matrix["req"])
    (command,) = conf.build_command
    argv = command.format(build_cache_dir=str(tmp_path / "wheels"), build_dir=str(PROJECT_ROOT)).split()
    argv[0] = sys.executable
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PIP_NO_INDEX": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = list((tmp_path / "wheels").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {"harness", "suites"} <= tops and "benchmarks" not in tops
    assert "harness/present/templates/report.html.j2" in names  # the report's template ships in the wheel



WHEELHOUSE = Path(__file__).resolve().parent.parent / ".cache" / "wheelhouse"


def _managed_config(project, deps_path: str) -> Path:
    """The shipped asv.conf.json, made to use this repository and the test runner's packages.

    Copying torch and the other dependencies into a fresh environment from a wheelhouse takes
    gigabytes, so here the matrix is empty and the first install step links the runner's
    site-packages into the environment (a ``.pth`` line, after the environment's own
    site-packages); the build and install of the project's wheel are the shipped commands."""
    import asv.util

    from harness.paths import PROJECT_ROOT

    conf = asv.util.load_json(str(PROJECT_ROOT / "asv.conf.json"), js_comments=True)
    link = ("in-dir={env_dir} python -c \"import pathlib, sysconfig; pathlib.Path(sysconfig.get_path('purelib'), "
            f"'zz_runner_deps.pth').write_text('{deps_path}')\"")
    conf.update(matrix={}, pythons=[f"{sys.version_info.major}.{sys.version_info.minor}"],
                install_command=[link, *conf["install_command"]],
                results_dir=".asv-managed/results", env_dir=".asv-managed/env", html_dir=".asv-managed/html")
    path = project.root / "asv-managed.conf.json"
    path.write_text(json.dumps(conf, indent=1))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not any(WHEELHOUSE.glob("wheel-*.whl")),
                    reason="no wheelhouse with pip and wheel in .cache/wheelhouse (make setup fetches them)")
def test_asv_continuous_in_managed_environments_reports_the_slowed_variant_only(project):
    """``asv continuous`` between the first two commits, each built as a wheel and installed in
    an asv-managed virtualenv offline (PIP_NO_INDEX, the wheelhouse): commit 2 slowed the
    'sleep' variant in the suite file and lowered its score, so exactly the sleep rows of the
    exactly reported metrics (work, score) change,
    which shows that each commit's own suites were measured (not the working tree twice)."""
    import sysconfig

    conf = _managed_config(project, sysconfig.get_path("purelib"))
    env = {k: v for k, v in project.env.items() if k != "ASV_PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE),
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    machine = "asv-managed-box"
    run([asv_exe(), "machine", "--yes", "--machine", machine, "--config", str(conf)], project.root, env)
    a, b = project.commits[0], project.commits[1]
    proc = subprocess.run(
        [asv_exe(), "continuous", "--config", str(conf), "--machine", machine, "--bench", "asvprobe",
         "--launch-method", "forkserver", "--factor", "1.3", "--split", "--show-stderr", a, b],
        cwd=project.root, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert "SOME BENCHMARKS HAVE CHANGED SIGNIFICANTLY" in out, out[-6000:]
    assert proc.returncode == 1, out[-6000:]  # asv continuous fails on a regression
    changed = [ln for ln in out.splitlines() if ln.strip().lstrip("|").strip().startswith(("+", "-"))
               and "asvprobe.AsvProbe" in ln]
    exact = [ln for ln in changed if "track_work" in ln or "track_score" in ln]  # not wall-clock ones
    assert any("track_work" in ln and "'sleep'" in ln for ln in exact), out[-6000:]
    assert any("track_score" in ln and "'sleep'" in ln for ln in exact), out[-6000:]
    assert not any("'steady'" in ln for ln in exact), out[-6000:]
    envs = list((project.root / ".asv-managed" / "env").iterdir())
    assert envs, "asv made no managed environment"
