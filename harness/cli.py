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
from .plan import PlanError, check_overrides, parse_param_overrides, plan_suite
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
        handler = {"list": cmd_list, "run": cmd_run, "export": cmd_export}[args.command]
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
    cases = []
    for cls in selected:
        if args.profile not in cls.profile_names():
            raise PlanError(f"suite {cls.suite_name()!r} has no profile {args.profile!r}{suggest(args.profile, cls.profile_names())}")
        cases += plan_suite(cls, args.profile, device, args.pattern, overrides)
    if not cases:
        raise PlanError(f"no case matches -k {args.pattern!r}" if args.pattern else "the plan has no cases")
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
    return EXIT_OK if not (reg.failures and not args.targets) else 1


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


if __name__ == "__main__":
    raise SystemExit(main())
