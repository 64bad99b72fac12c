"""The ``harness`` command (also ``python -m harness``).

Bad input ends with one line ``harness: error: ...`` and exit code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from . import export as export_mod
from .plan import PlanError, check_overrides, check_variants, parse_param_overrides, plan_suite
from .registry import Registry, RegistryError, discover, suggest
from .results import RUN_FILE, ENVIRONMENT_FILE, Record, RecordWriter, ResultsError, load_run, write_json

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="Benchmark deep-learning techniques for speed, memory and quality.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    ls = sub.add_parser("list", help="list suites, their variants, params and profiles")
    ls.add_argument("targets", nargs="*", metavar="SUITE|PATH")

    run = sub.add_parser("run", help="run suites and write a run folder")
    run.add_argument("targets", nargs="*", metavar="SUITE|PATH", help="suite names or suite files/folders (default: all)")
    run.add_argument("--profile", default="quick", help="quick, default or nightly (default: quick)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    run.add_argument("-k", dest="pattern", help="only cases whose 'suite/variant k=v' label matches (substring or glob; and/or/not)")
    run.add_argument("--variant", action="append", metavar="NAME[,NAME]", help="only these variants (repeatable)")
    run.add_argument("--param", action="append", metavar="NAME=V1,V2", help="override a param's values (repeatable)")
    run.add_argument("--isolate", action="store_true", help="run each case in a worker process")
    run.add_argument("--timeout", type=float, help="per-case time limit in seconds")
    run.add_argument("--out", help="run folder to write (default: results/<run-id>)")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; recorded)")
    run.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    run.add_argument("--quiet", action="store_true", help="do not print the result tables")
    run.add_argument("--format", default="markdown", choices=export_mod.FORMATS, help="format of the printed tables")

    ex = sub.add_parser("export", help="render a run folder's tables")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", default="markdown", help="markdown, csv, latex, html or json")
    ex.add_argument("--metric", help="only this metric")
    ex.add_argument("--suite", help="only this suite")
    ex.add_argument("--output", "-o", help="write to this file instead of stdout")
    _add_history_commands(sub, run)

    doc = sub.add_parser("doctor", help="check timing, memory, NVML and measure peaks on this machine")
    doc.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        handler = {"list": cmd_list, "run": cmd_run, "export": cmd_export, "baseline": cmd_baseline,
                   "compare": cmd_compare, "report": cmd_report, "doctor": cmd_doctor}[args.command]
        return handler(args)
    except (UsageError, RegistryError, PlanError, ResultsError) as exc:
        if debug:
            traceback.print_exc()
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- helpers
def resolve_targets(targets: list[str]) -> tuple[Registry, list[type]]:
    """Suite names and paths -> (registry, selected suite classes in order)."""
    paths = [t for t in targets if _looks_like_path(t)]
    reg = discover(extra=paths)
    selected: list[type] = []
    if not targets:
        selected = [reg.suites[n] for n in reg.names()]
    for t in targets:
        if _looks_like_path(t):
            from .registry import import_file, suites_in_module

            failed = [f for f in reg.failures if Path(f.path).resolve() == Path(t).resolve()]
            if failed:
                raise RegistryError(f"suite file {t} failed to load: {failed[0].error}")
            files = [Path(t)] if Path(t).is_file() else sorted(Path(t).glob("*.py"))
            for f in files:
                if f.name.startswith("_"):
                    continue
                for cls in suites_in_module(import_file(f)):
                    if cls not in selected:
                        selected.append(cls)
        else:
            cls = reg.get(t)
            if cls not in selected:
                selected.append(cls)
    if targets and not selected:
        raise RegistryError("no suite found in " + ", ".join(targets))
    return reg, selected


def _looks_like_path(t: str) -> bool:
    return t.endswith(".py") or os.sep in t or Path(t).is_dir()


def _warn_failures(reg: Registry) -> None:
    for f in reg.failures:
        print(f"harness: warning: suite file {f.path} failed to load: {f.error}", file=sys.stderr)


def suite_meta(cls) -> dict[str, Any]:
    return {
        "reference": cls.reference,
        "description": cls.description,
        "spec_hash": cls.spec_hash(),
        "variants": list(cls.variants()),
        "grid": {k: list(v) for k, v in cls.grid.items()},
        "metrics": {n: {"unit": m.unit, "better": m.better, "ratio": m.ratio} for n, m in cls.metric_specs().items()},
    }


# --------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    reg, selected = resolve_targets(args.targets)
    for cls in selected:
        print(f"{cls.suite_name()}: {cls.description}")
        print(f"  reference: {cls.reference}")
        print("  variants:")
        for name, spec in cls.variants().items():
            needs = []
            if spec.requires:
                needs.append("requires " + ", ".join(spec.requires))
            if spec.packages:
                needs.append("packages " + ", ".join(spec.packages))
            if spec.params:
                needs.append("params " + ", ".join(f"{k}={list(v)}" for k, v in spec.params.items()))
            extra = f" [{'; '.join(needs)}]" if needs else ""
            print(f"    {name}{extra}: {spec.description}")
        print("  params:")
        for k, v in cls.grid.items():
            print(f"    {k}: {list(v)}")
        print("  metrics: " + ", ".join(f"{m.name} [{m.unit}] ({m.better})" for m in cls.metric_specs().values()))
        print("  profiles:")
        for pname in cls.profile_names():
            prof = cls.profile(pname)
            grid = ", ".join(f"{k}={list(v)}" for k, v in prof.grid.items()) or "the params above"
            variants = f"; variants {list(prof.variants)}" if prof.variants else ""
            print(f"    {pname}: {grid}{variants}")
        print()
    _warn_failures(reg)
    return EXIT_OK if not reg.failures else 1


def default_run_id(device: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{device.replace(':', '')}"


def cmd_run(args) -> int:
    import torch

    from .environment import fingerprint, resolve_device
    from .runner import run_cases

    against = _load_against(args)  # a bad baseline name fails before anything runs
    reg, selected = resolve_targets(args.targets)
    if not args.targets:
        _warn_failures(reg)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, not {args.threads}")
        torch.set_num_threads(args.threads)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, not {args.timeout:g}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    overrides = parse_param_overrides(args.param)
    check_overrides(selected, overrides)
    only = [v.strip() for item in args.variant or [] for v in item.split(",") if v.strip()]
    check_variants(selected, only)
    cases = []
    for cls in selected:
        if args.profile not in cls.profile_names():
            raise PlanError(f"suite {cls.suite_name()!r} has no profile {args.profile!r}{suggest(args.profile, cls.profile_names())}")
        cases += plan_suite(cls, args.profile, device, args.pattern, overrides, only)
    if not cases:
        raise PlanError(f"no case matches -k {args.pattern!r}" if args.pattern else "no case matches the selection")
    run_id = default_run_id(device)
    out = Path(args.out) if args.out else Path("results") / run_id
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} already exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    suites = {cls.suite_name(): cls for cls in selected}
    meta = {
        "run_id": run_id,
        "argv": ["harness", "run", *sys.argv[2:]] if sys.argv[1:2] == ["run"] else None,
        "profile": args.profile,
        "device": device,
        "pattern": args.pattern,
        "param_overrides": overrides,
        "isolate": bool(args.isolate),
        "timeout_s": args.timeout,
        "threads": torch.get_num_threads(),
        "suites": {name: suite_meta(cls) for name, cls in suites.items()},
        "load_failures": [{"path": f.path, "error": f.error} for f in reg.failures],
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_cases": len(cases),
        "finished": False,
    }
    write_json(out / RUN_FILE, meta)
    write_json(out / ENVIRONMENT_FILE, fingerprint(device))
    if not args.targets and reg.failures:
        with RecordWriter(out) as w:
            for f in reg.failures:
                w.write(Record(suite=Path(f.path).stem, variant="*", params={}, device=device, status="failed",
                               reason=f"suite file failed to load: {f.error}", run_id=run_id))
    records = run_cases(
        cases, suites, out, run_id=run_id, isolate=args.isolate, timeout_s=args.timeout,
        progress=not args.no_progress, threads=args.threads,
    )
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    meta.update(finished=True, status_counts=counts,
                finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_json(out / RUN_FILE, meta)
    if not args.quiet:
        tables = export_mod.build_tables(records, meta["suites"])
        print(export_mod.render(tables, args.format))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"harness: {len(records)} cases ({summary}); run folder {out}", file=sys.stderr)
    code = EXIT_OK if not (reg.failures and not args.targets) else 1
    if against is not None:
        code = max(code, _compare_against(against, out, args))
    return code


def cmd_export(args) -> int:
    if args.format not in export_mod.FORMATS:
        raise UsageError(f"unknown format {args.format!r}{suggest(args.format, export_mod.FORMATS)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(args.run_dir)
    for w in caught:
        print(f"harness: warning: {w.message}", file=sys.stderr)
    if not run.records:
        raise ResultsError(f"{args.run_dir} holds no records")
    suites_meta = run.meta.get("suites", {})
    if args.suite and args.suite not in {r.suite for r in run.records}:
        raise UsageError(f"run has no suite {args.suite!r}{suggest(args.suite, sorted({r.suite for r in run.records}))}")
    if args.metric:
        known = sorted({m for r in run.records for m in r.metrics})
        if args.metric not in known:
            raise UsageError(f"run has no metric {args.metric!r}{suggest(args.metric, known)}")
    tables = export_mod.build_tables(run.records, suites_meta, metric=args.metric, suite=args.suite)
    text = export_mod.render(tables, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------- history: baselines, compare, report
def _add_compare_options(parser, with_format: bool = True) -> None:
    parser.add_argument("--threshold", action="append", metavar="KIND=FRACTION",
                        help="relative change that counts, per metric kind (time, rate, memory, quality); "
                             "defaults time=0.05 rate=0.05 memory=0.05 quality=0.02 (repeatable)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level of the Mann-Whitney U test (default 0.01)")
    parser.add_argument("--quality-atol", type=float, default=1e-6, help="absolute change of a quality metric that counts as the same (default 1e-6)")
    parser.add_argument("--force", action="store_true", help="compare results from different devices anyway")
    parser.add_argument("--fail-on-missing", action="store_true", help="also exit 1 when cases or metrics are missing")
    if with_format:
        parser.add_argument("--format", default="markdown", help="markdown, json or csv")
        parser.add_argument("--changes-only", action="store_true", help="leave out rows whose verdict is 'same' (markdown)")
        parser.add_argument("--output", "-o", help="write to this file instead of stdout")


def _add_history_commands(sub, run) -> None:
    run.add_argument("--against", metavar="BASELINE|RUN_DIR", help="compare the new run against a baseline; exit 1 on regression")
    _add_compare_options(run, with_format=False)
    base = sub.add_parser("baseline", help="save or list baselines (baselines/NAME.json)")
    bsub = base.add_subparsers(dest="baseline_command", parser_class=_Parser)
    save = bsub.add_parser("save", help="save a run folder as baselines/NAME.json")
    save.add_argument("run_dir", metavar="RUN_DIR")
    save.add_argument("--name", required=True, help="baseline name (letters, digits, '.', '_', '-')")
    save.add_argument("--dir", help="baselines folder (default: $HARNESS_BASELINES_DIR or the project's baselines/)")
    save.add_argument("--force", action="store_true", help="replace an existing baseline of that name")
    bsub.add_parser("list", help="list the stored baselines")
    cmp_ = sub.add_parser("compare", help="compare B against A (run folders or baseline names); exit 1 on regression")
    cmp_.add_argument("a", metavar="A", help="reference: run folder, baseline name or baseline file")
    cmp_.add_argument("b", metavar="B", help="new results: run folder, baseline name or baseline file")
    _add_compare_options(cmp_)
    rep = sub.add_parser("report", help="write a self-contained HTML report of a run")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--against", metavar="BASELINE|RUN_DIR", help="add the comparison against this baseline or run")
    rep.add_argument("--output", "-o", help="HTML file to write (default: RUN_DIR/report.html)")
    _add_compare_options(rep, with_format=False)


def _compare_options(args):
    from .compare import CompareOptions

    thresholds = dict(CompareOptions().thresholds)
    for item in getattr(args, "threshold", None) or []:
        kind, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            thresholds[kind.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--threshold {item!r}: expected KIND=FRACTION, e.g. time=0.05") from None
    try:
        return CompareOptions(thresholds=thresholds, alpha=args.alpha, quality_atol=args.quality_atol,
                              force=args.force, fail_on_missing=args.fail_on_missing)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _load_against(args):
    from .baseline import load_results

    if not getattr(args, "against", None):
        return None
    _compare_options(args)  # bad flags fail before the run
    return load_results(args.against)


def _compare_against(against, run_dir: Path, args) -> int:
    from .baseline import load_results
    from .compare import compare, render

    comparison = compare(against, load_results(str(run_dir)), _compare_options(args))
    print(render(comparison, "markdown", changes_only=True))
    return comparison.exit_code


def cmd_baseline(args) -> int:
    from .baseline import baselines_dir, list_baselines, load_results, save_baseline

    if args.baseline_command == "save":
        path = save_baseline(args.run_dir, args.name, Path(args.dir) if args.dir else None, force=args.force)
        print(f"harness: baseline {args.name!r} written to {path}", file=sys.stderr)
        return EXIT_OK
    if args.baseline_command == "list":
        for name in list_baselines():
            rs = load_results(name)
            print(f"{name}: {rs.describe_device()}, {len(rs.records)} cases, profile {rs.meta.get('profile')}")
        if not list_baselines():
            print(f"no baselines in {baselines_dir()}", file=sys.stderr)
        return EXIT_OK
    raise UsageError("baseline needs a subcommand: save or list")


def cmd_compare(args) -> int:
    from .baseline import load_results
    from .compare import FORMATS, compare, render

    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}{suggest(args.format, FORMATS)}")
    options = _compare_options(args)
    comparison = compare(load_results(args.a), load_results(args.b), options)
    text = render(comparison, args.format, changes_only=args.changes_only)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    from .compare import summary_line

    print(f"harness: {summary_line(comparison)}", file=sys.stderr)
    return comparison.exit_code


def cmd_report(args) -> int:
    from .baseline import load_results
    from .compare import compare
    from .report import write_report

    rs = load_results(args.run_dir, strict=False)
    if rs.kind != "run":
        raise UsageError(f"{args.run_dir} is not a run folder")
    comparison = compare(load_results(args.against), rs, _compare_options(args)) if args.against else None
    path = write_report(rs, Path(args.output) if args.output else Path(args.run_dir) / "report.html", comparison)
    print(f"harness: report written to {path}", file=sys.stderr)
    return comparison.exit_code if comparison is not None else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())


def cmd_doctor(args) -> int:
    from .doctor import run_doctor
    from .environment import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return run_doctor(device, sys.stdout)
