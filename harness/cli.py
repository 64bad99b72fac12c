"""The ``harness`` command (also ``python -m harness``).

Bad input ends with one line ``harness: error: ...`` and exit code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from .present import export as export_mod
from .plan import PlanError, merge_param_items, parse_param_item
from .declare.registry import Registry, RegistryError, discover, suggest
from .results import FAILED_STATUSES, ResultsError, load_results
from .results.store import StoreWriteError
from .run.request import as_shard, positive_seconds, strictly_positive, thread_count
from .run.session import RunTerminated

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2
EXIT_FAILURES = 1  # harness run: some case failed, ran out of memory, timed out or crashed


class UsageError(Exception):
    """Bad input from the user: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        # a type function's message names its option already: "argument --rounds: --rounds must..."
        option, sep, rest = message.removeprefix("argument ").partition(": ")
        raise UsageError(rest if sep and rest.startswith(option.split("/")[0] + " ") else message)


def _typed(convert, check=None, name: str = ""):
    """An argparse ``type=``: text -> ``convert`` -> ``check(value, name)``; the parse happens here,
    at the edge, and everything after holds the typed value (pyperf's ``strictly_positive``)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {convert.__name__} value: {text!r}") from None
        except PlanError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        try:
            return check(value, name) if check else value
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def non_negative(value: float, name: str) -> float:
    """A tolerance or threshold: a finite number of at least 0."""
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of at least 0, not {value:g}")
    return value


def folder_name(value: str, name: str) -> str:
    """A run folder's path as given, refusing an empty one (which would name the current folder)."""
    if not value.strip():
        raise ValueError(f"{name} must name a folder, not {value!r}")
    return value


def file_name(value: str, name: str) -> str:
    """An output file's path as given, refusing an empty one (which would mean the default)."""
    if not value.strip():
        raise ValueError(f"{name} must name a file, not {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="Benchmark deep-learning techniques for speed, memory and quality.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    ls = sub.add_parser("list", help="list suites, their variants, params and profiles")
    ls.add_argument("targets", nargs="*", metavar="SUITE|PATH")

    run = sub.add_parser("run", help="run suites and write a run folder")
    run.add_argument("targets", nargs="*", metavar="SUITE|PATH", help="suite names or suite files/folders (default: all)")
    _add_selection_options(run)
    run.add_argument("--isolate", action="store_true",
                     help="run each case in a worker process, killed at the time limit (a crash or hang costs one case)")
    run.add_argument("--worker-per-case", action="store_true",
                     help="like --isolate, with a fresh worker process for every case")
    run.add_argument("--no-supervisor", dest="supervise", action="store_false",
                     help="run the cases in this process (default: in one child process that a thin parent "
                          "replaces when a case crashes or hangs where its alarm cannot reach)")
    run.add_argument("--executor", default="local", choices=("local", "ray"),
                     help="local: this machine (default); ray: one Ray task per grid point over a cluster "
                          "or an embedded local Ray (needs the extra dl-harness[ray])")
    run.add_argument("--ray-address", metavar="ADDR", help="with --executor ray: join this Ray cluster ('auto', host:port)")
    run.add_argument("--shard", type=_typed(as_shard), metavar="I/N", help="run only the I-th of N shards of the plan (by grid point); "
                                                      "'harness merge' joins the shards")
    run.add_argument("--timeout", type=_typed(float, positive_seconds, "--timeout"), help="per-case time limit in seconds")
    run.add_argument("--out", type=_typed(str, folder_name, "--out"), help="run folder to write (default: results/<run-id>)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted, killed or crashed run in RUN_DIR with its own plan")
    run.add_argument("--threads", type=_typed(int, thread_count, "--threads"),
                     help="torch CPU threads (default on the CPU: half the usable cores, at most 8, for numbers "
                          "that hold on a shared machine; recorded)")
    run.add_argument("--cpus", type=_typed(str, _cpu_list_or_all, "--cpus"), metavar="LIST|all",
                     help="on the CPU, the cores the run is pinned to, e.g. 3 or 2,3 (default: the last --threads "
                          "cores this process may use, recorded; 'all': not pinned)")
    run.add_argument("--rounds", type=_typed(int, strictly_positive, "--rounds"), default=1, metavar="R",
                     help="passes over all cases, one after the other (default 1): compare reads the spread "
                          "between rounds as the run-to-run noise; a nightly gate wants 3 or more")
    run.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    run.add_argument("--quiet", action="store_true", help="do not print the result tables")
    run.add_argument("--format", default="markdown", choices=export_mod.FORMATS, help="format of the printed tables")
    run.add_argument("--allow-failures", action="store_true",
                     help="exit 0 even when cases failed, ran out of memory, timed out or crashed")

    ex = sub.add_parser("export", help="render a run folder's tables, or write it for other benchmark tools")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", default="markdown",
                    help="markdown, csv, latex, html, json, pytest-benchmark or github-action-benchmark")
    ex.add_argument("--layout", default="metric",
                    help="tables: 'metric' (one per suite and metric, variants as columns; default) or "
                         "'suite' (one per suite, metrics as columns)")
    ex.add_argument("--metric", help="only this metric")
    ex.add_argument("--suite", help="only this suite")
    ex.add_argument("--pivot", action="append", default=[], metavar="PARAM",
                    help="show this variant param as rows, not in the column label, so variants line up at "
                         "equal values of it (e.g. --pivot steps: DDIM and flow matching at equal steps); "
                         "repeat or separate with commas")
    ex.add_argument("--better", help="github-action-benchmark: the metrics where 'lower' "
                                     "(customSmallerIsBetter) or 'higher' (customBiggerIsBetter) is better")
    ex.add_argument("--storage", metavar="DIR", help="pytest-benchmark: write into DIR/<machine-id>/NNNN_<run>.json, "
                                                     "the layout 'pytest-benchmark compare --storage' reads")
    ex.add_argument("--output", "-o", type=_typed(str, file_name, "--output"),
                    help="write to this file instead of stdout")
    _add_history_commands(sub, run)

    doc = sub.add_parser("doctor", help="check timing, memory, NVML and measure peaks on this machine")
    doc.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    mg = sub.add_parser("merge", help="merge the run folders of one sweep (e.g. its shards) into one run folder")
    mg.add_argument("runs", nargs="+", metavar="RUN_DIR")
    mg.add_argument("--out", type=_typed(str, folder_name, "--out"), required=True, help="run folder to write")
    _add_ab_command(sub)
    return p


def _add_selection_options(parser) -> None:
    """What a run measures: profile, device and the filters of its plan (``run`` and ``ab``)."""
    parser.add_argument("--profile", default="quick", help="quick, default or nightly (default: quick)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("-k", dest="pattern",
                        help="only cases whose 'suite/variant k=v' label matches (substring or glob; and/or/not)")
    parser.add_argument("--variant", action="append", metavar="NAME[,NAME]", help="only these variants (repeatable)")
    parser.add_argument("--param", action="append", type=_typed(parse_param_item), metavar="NAME=V1,V2",
                        help="override a param's values (repeatable)")


def _add_ab_command(sub) -> None:
    ab = sub.add_parser("ab", help="measure two commits (or checkouts) side by side, paired; exit 1 on regression")
    ab.add_argument("items", nargs="*", metavar="REF_A REF_B [SUITE|PATH ...]",
                    help="two git refs (side A: the reference, side B: the change), then suite names or suite "
                         "files (paths inside the checkout; default: every suite in suites/)")
    ab.add_argument("--a-path", metavar="DIR", help="side A is this checkout (not a commit); needs --b-path")
    ab.add_argument("--b-path", metavar="DIR", help="side B is this checkout (not a commit); needs --a-path")
    ab.add_argument("--engine", default="driver", choices=("driver", "sides"),
                    help="driver: this harness measures both sides' suites (any commit can be side A; default); "
                         "sides: each side's own harness/ measures it (gates an engine change)")
    _add_selection_options(ab)
    ab.add_argument("--cpus", type=_typed(str, _cpu_list, "--cpus"), metavar="LIST",
                    help="the CPU cores both sides' workers are pinned to, e.g. 3 or 2,3 (default: the last core "
                         "this process may use)")
    ab.add_argument("--threads", type=_typed(int, thread_count, "--threads"),
                    help="torch CPU threads of each side (default: the number of pinned cores; at most that)")
    ab.add_argument("--timeout", type=_typed(float, positive_seconds, "--timeout"),
                    help="per-case time limit of each side, in seconds")
    ab.add_argument("--max-rounds", type=_typed(int, strictly_positive, "--max-rounds"), default=None, metavar="R",
                    help="paired rounds of a case at most (default 60; a case stops earlier once its verdict is "
                         "clear or its 20 s budget is spent)")
    ab.add_argument("--out", type=_typed(str, folder_name, "--out"),
                    help="folder to write (a/ and b/ run folders, ab.md, ab.json; default: results/ab-<time>)")
    ab.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    ab.add_argument("--quiet", action="store_true", help="do not print the verdict table")
    _add_compare_options(ab, with_format=False)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = ["harness", *argv]
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        handler = {"list": cmd_list, "run": cmd_run, "export": cmd_export, "baseline": cmd_baseline,
                   "compare": cmd_compare, "report": cmd_report, "doctor": cmd_doctor,
                   "merge": cmd_merge, "ab": cmd_ab}[args.command]
        return handler(args)
    except (UsageError, RegistryError, PlanError, ResultsError) as exc:
        if debug:
            traceback.print_exc()
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreWriteError as exc:  # a full disk where no command names it more closely: one line
        if debug:
            traceback.print_exc()
        print(f"harness: error: cannot write {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except RunTerminated as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:  # the reader closed the pipe (e.g. `harness baseline list | head -1`)
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _enable_faulthandler() -> None:
    """A case that crashes the process (a segfault) leaves a Python traceback naming it."""
    import faulthandler

    try:
        faulthandler.enable()
    except (ValueError, OSError, AttributeError):  # stderr without a file descriptor (captured)
        pass


def _variant_names(items: list[str] | None) -> list[str]:
    names = []
    for item in items or []:
        parts = [v.strip() for v in item.split(",")]
        if not any(parts):
            raise UsageError(f"--variant {item!r} names no variant")
        names += [p for p in parts if p and p not in names]
    return names


def check_output(path: str) -> Path:
    """The output file a command may write, or one clear line saying why it cannot be."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name")
    if not target.parent.is_dir():
        raise UsageError(f"--output {path}: the folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"--output {path} cannot be written: permission denied")
    return target


def write_output(path: str, text: str) -> None:
    """Write a command's output file whole, or one clear line saying why it cannot be written (a full
    disk leaves no partial file and no temporary one; an existing file stays as it was). A target
    that is not a regular file (a pipe, a device) is written through."""
    from .results.store import write_output_file

    target = check_output(path)
    try:
        write_output_file(target, text)
    except OSError as exc:
        raise UsageError(f"--output {path} cannot be written: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- helpers
def resolve_targets(targets: list[str]) -> tuple[Registry, list[type], list]:
    """Suite names and paths -> (registry, selected suite classes in order, load failures that
    concern the selection: every broken file when no target is named, else those in the named
    folders). A named suite file that fails to load is an error."""
    paths = [t for t in targets if _looks_like_path(t)]
    reg = discover(extra=paths)
    selected: list[type] = []
    failures = list(reg.failures) if not targets else []
    for t in targets:
        if _looks_like_path(t):
            classes, failed = reg.from_path(t)
            if failed and Path(t).is_file():
                raise RegistryError(f"suite file {t} failed to load: {failed[0].error}")
            failures += [f for f in failed if f not in failures]
            if not classes and not failed:
                raise RegistryError(f"no suite found in {t}")
        else:
            classes = [reg.get(t)]
        selected += [c for c in classes if c not in selected]
    if not targets:
        selected = [reg.suites[n] for n in reg.names()]
    if not selected:
        detail = "; ".join(f"{f.path}: {f.error}" for f in failures)
        raise RegistryError("no suite could be loaded" + (f" ({detail})" if detail else ""))
    return reg, selected, failures


def _looks_like_path(t: str) -> bool:
    return t.endswith(".py") or os.sep in t or Path(t).is_dir()


def _warn_failures(failures) -> None:
    for f in failures:
        print(f"harness: warning: suite file {f.path} failed to load: {f.error}", file=sys.stderr)


# --------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    _, selected, failures = resolve_targets(args.targets)
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
    _warn_failures(failures)
    return EXIT_OK if not failures else 1


def cmd_run(args) -> int:
    from .run.request import build_request, plan_request
    from .run.session import RunSession

    _enable_faulthandler()
    against = _load_against(args)  # a bad baseline name fails before anything runs
    if args.resume:
        if args.targets or args.out or args.param or args.variant or args.pattern:
            raise UsageError("--resume continues the run's own plan; give no suites, --out, --param, --variant or -k")
        if args.shard:
            raise UsageError("--resume continues the run's own shard; give no --shard")
        session = RunSession.resume(args.resume, progress=not args.no_progress, ray_address=args.ray_address)
        return _finish_run(args, session, session.run_remaining(), against)
    _, selected, failures = resolve_targets(args.targets)
    _warn_failures(failures)
    if isinstance(args.cpus, list) and args.threads and args.threads > len(args.cpus):
        raise UsageError(f"--threads {args.threads} is more than the {len(args.cpus)} core(s) of --cpus: the threads "
                         f"would take turns on them")
    request = build_request(
        selected, profile=args.profile, device=args.device, pattern=args.pattern,
        params=merge_param_items(args.param), variants=_variant_names(args.variant), isolate=args.isolate,
        supervise=args.supervise, worker_per_case=args.worker_per_case, executor=args.executor,
        ray_address=args.ray_address, shard=args.shard, timeout_s=args.timeout, threads=args.threads,
        rounds=args.rounds, progress=not args.no_progress, argv=args.argv,
        cpus=None if args.cpus in (None, "all") else args.cpus, pin=args.cpus != "all",
    )
    session = RunSession(Path(args.out) if args.out else None, plan_request(request, selected),
                         {c.suite_name(): c for c in selected}, request, load_failures=failures)
    return _finish_run(args, session, session.run(), against)


def cmd_merge(args) -> int:
    from .run.merge import merge_runs

    merged = merge_runs(args.runs, args.out)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(merged.status_counts().items()))
    nodes = len(merged.environment.get("nodes") or {})
    print(f"harness: merged {len(args.runs)} runs into {args.out}: {len(merged.records)} cases ({counts}) "
          f"from {nodes} machine(s)", file=sys.stderr)
    return EXIT_OK


def _finish_run(args, session, results, against) -> int:
    """Print the tables and the summary of a finished run; its exit code."""
    if not args.quiet:
        tables = export_mod.build_tables(results.records, results.suites_meta)
        print(export_mod.render(tables, args.format))
    counts = results.status_counts()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"harness: {len(results.records)} cases ({summary}); run folder {session.folder}", file=sys.stderr)
    bad = sum(n for s, n in counts.items() if s in FAILED_STATUSES)
    code = EXIT_OK
    if bad and not args.allow_failures:
        print(f"harness: {bad} case(s) did not succeed; exit 1 (--allow-failures keeps exit 0)", file=sys.stderr)
        code = EXIT_FAILURES
    if against is not None:
        code = max(code, _compare_against(against, results, args))
    return code


def cmd_export(args) -> int:
    import json

    from .present import integrations

    formats = export_mod.FORMATS + integrations.INTEGRATION_FORMATS
    if args.format not in formats:
        raise UsageError(f"unknown format {args.format!r}{suggest(args.format, formats)}")
    if args.layout not in export_mod.LAYOUTS:
        raise UsageError(f"unknown layout {args.layout!r}{suggest(args.layout, export_mod.LAYOUTS)}")
    if args.format == "github-action-benchmark" and args.better not in integrations.GAB_TOOLS:
        raise UsageError("github-action-benchmark needs --better lower (customSmallerIsBetter) "
                         "or --better higher (customBiggerIsBetter)")
    if args.storage and args.format != "pytest-benchmark":
        raise UsageError("--storage is for --format pytest-benchmark")
    run = load_results(args.run_dir, strict=False)
    for w in run.warnings:
        print(f"harness: warning: {w}", file=sys.stderr)
    if args.suite and args.suite not in {r.suite for r in run.records}:
        raise UsageError(f"run has no suite {args.suite!r}{suggest(args.suite, sorted({r.suite for r in run.records}))}")
    if args.metric:
        known = sorted({m for r in run.records for m in r.metrics})
        if args.metric not in known:
            raise UsageError(f"run has no metric {args.metric!r}{suggest(args.metric, known)}")
    pivot = [p for arg in args.pivot for p in arg.split(",") if p]
    known_params = sorted({k for r in run.records if not args.suite or r.suite == args.suite for k in r.params})
    for param in pivot:
        if param not in known_params:
            raise UsageError(f"no case of the run has the param {param!r} to pivot{suggest(param, known_params)}")
    if pivot and args.format in integrations.INTEGRATION_FORMATS:
        raise UsageError(f"--pivot shapes tables; --format {args.format} writes one entry per case")
    if args.format in integrations.INTEGRATION_FORMATS:
        if args.metric or args.suite:
            run.records = [r for r in run.records if (not args.suite or r.suite == args.suite)]
            if args.metric:
                for r in run.records:
                    r.metrics = {k: m for k, m in r.metrics.items() if k == args.metric}
        if args.format == "pytest-benchmark":
            doc, left_out = integrations.pytest_benchmark_json(run)
            if left_out:
                print(f"harness: {len(left_out)} case(s) without timing samples left out (pytest-benchmark holds "
                      f"timings only): " + "; ".join(left_out[:5]) + (" ..." if len(left_out) > 5 else ""),
                      file=sys.stderr)
            if args.storage:
                try:
                    path = integrations.save_to_storage(doc, run, Path(args.storage))
                except OSError as exc:
                    raise UsageError(f"--storage {args.storage} cannot be written: {exc.strerror or exc}") from None
                print(f"harness: {len(doc['benchmarks'])} benchmarks written to {path}", file=sys.stderr)
                return EXIT_OK
        else:
            doc, tool = integrations.github_action_benchmark_json(run, args.better)
            print(f"harness: {len(doc)} entries for github-action-benchmark's tool '{tool}'", file=sys.stderr)
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    else:
        tables = export_mod.build_tables(run, metric=args.metric, suite=args.suite, pivot=pivot)
        text = export_mod.render(tables, args.format, layout=args.layout)
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------- history: baselines, compare, report
def _add_compare_options(parser, with_format: bool = True) -> None:
    parser.add_argument("--threshold", action="append", metavar="KIND=FRACTION",
                        help="relative change that counts, per metric kind (time, rate, memory, quality); "
                             "defaults time=0.05 rate=0.05 memory=0.05 quality=0.02 (repeatable)")
    parser.add_argument("--single-round-change", type=_typed(float, non_negative, "--single-round-change"), default=0.25, metavar="FRACTION",
                        help="with one round on both sides (noise between runs unknown), the time change that "
                             "counts (default 0.25)")
    parser.add_argument("--quality-atol", type=_typed(float, non_negative, "--quality-atol"), default=None,
                        help="absolute change of every quality metric that counts as the same (default: 4 ulps of "
                             "the case's dtype at the metric's value, or the atol its suite declares)")
    parser.add_argument("--force", action="store_true", help="compare results from different devices anyway")
    parser.add_argument("--allow-missing", action="append", metavar="PATTERN",
                        help="acknowledge an intended removal: a case or metric of A missing in B (or skipped) "
                             "that PATTERN names is 'removed', not a regression; fnmatch against suite/variant[params], "
                             "suite/variant, the metric name or suite/variant[params]:metric (repeatable)")
    parser.add_argument("--fail-on-missing", action="store_true",
                        help="accepted for old scripts: missing cases and metrics exit 1 by default (see --allow-missing)")
    if with_format:
        parser.add_argument("--format", default="markdown", help="markdown, json or csv")
        parser.add_argument("--changes-only", action="store_true", help="leave out rows whose verdict is 'same' (markdown)")
        parser.add_argument("--output", "-o", type=_typed(str, file_name, "--output"),
                            help="write to this file instead of stdout")


def _add_history_commands(sub, run) -> None:
    run.add_argument("--against", metavar="BASELINE|RUN_DIR", help="compare the new run against a baseline; exit 1 on regression")
    _add_compare_options(run, with_format=False)
    base = sub.add_parser("baseline", help="save or list baselines (baselines/NAME.json)")
    bsub = base.add_subparsers(dest="baseline_command", parser_class=_Parser)
    save = bsub.add_parser("save", help="save a run folder (or several of one plan, joined) as baselines/NAME.json")
    save.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                      help="run folder(s); the rounds of several runs become the baseline's rounds")
    save.add_argument("--name", required=True, help="baseline name (letters, digits, '.', '_', '-')")
    save.add_argument("--dir", help="baselines folder (default: $HARNESS_BASELINES_DIR, else baselines/ in the "
                                    "current folder, created)")
    save.add_argument("--force", action="store_true", help="replace an existing baseline of that name")
    lst = bsub.add_parser("list", help="list the baselines a name finds, folder by folder in lookup order: names on "
                                       "stdout (NAME: device, cases, profile), folder headers on stderr")
    lst.add_argument("--dir", help="look in this folder first")
    cmp_ = sub.add_parser("compare", help="compare B against A (run folders or baseline names); exit 1 on regression")
    cmp_.add_argument("a", metavar="A", help="reference: run folder, baseline name or baseline file")
    cmp_.add_argument("b", metavar="B", help="new results: run folder, baseline name or baseline file")
    _add_compare_options(cmp_)
    rep = sub.add_parser("report", help="write a self-contained HTML report of a run")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--against", metavar="BASELINE|RUN_DIR", help="add the comparison against this baseline or run")
    rep.add_argument("--output", "-o", type=_typed(str, file_name, "--output"),
                     help="HTML file to write (default: RUN_DIR/report.html)")
    _add_compare_options(rep, with_format=False)


def _compare_options(args):
    from .judge.compare import CompareOptions

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
        return CompareOptions(thresholds=thresholds, single_round_change=args.single_round_change, quality_atol=args.quality_atol,
                              force=args.force, fail_on_missing=args.fail_on_missing,
                              allow_missing=tuple(args.allow_missing or ()))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _load_against(args):
    _compare_options(args)  # bad flags fail before the run
    if not getattr(args, "against", None):
        return None
    return load_results(args.against)


def _compare_against(against, results, args) -> int:
    from .judge.compare import compare
    from .present.compare_render import render

    comparison = compare(against, results, _compare_options(args))
    print(render(comparison, "markdown", changes_only=True))
    return comparison.exit_code


def cmd_baseline(args) -> int:
    from .results.baseline import save_baseline, searched_folders
    from .results.loader import load_baseline_file

    if args.baseline_command == "save":
        path = save_baseline(args.run_dir if len(args.run_dir) > 1 else args.run_dir[0], args.name, Path(args.dir) if args.dir else None, force=args.force)
        print(f"harness: baseline {args.name!r} written to {path}", file=sys.stderr)
        return EXIT_OK
    if args.baseline_command == "list":
        if args.dir and Path(args.dir).exists() and not Path(args.dir).is_dir():
            raise UsageError(f"--dir {args.dir} is not a folder")
        first: dict[str, Path] = {}  # name -> the file a lookup by name finds
        for folder in searched_folders(Path(args.dir) if args.dir else None):
            sys.stdout.flush()  # headers and names stay in order when both go to one place
            none = "" if folder.names else (" none" if folder.exists else " none (no such folder)")
            print(f"harness: baselines in {folder.path} ({folder.origin}):{none}", file=sys.stderr, flush=True)
            for name in folder.names:
                path = folder.path / f"{name}.json"
                try:
                    rs = load_baseline_file(path)
                    text = f"{rs.describe_device()}, {len(rs.records)} cases, profile {rs.meta.get('profile')}"
                except ResultsError as exc:
                    text = f"unreadable ({exc})"
                hidden = f" (hidden by {first[name]})" if name in first else ""
                first.setdefault(name, path)
                print(f"{name}: {text}{hidden}")
        return EXIT_OK
    raise UsageError("baseline needs a subcommand: save or list")


def cmd_compare(args) -> int:
    from .judge.compare import compare
    from .present.compare_render import FORMATS, render, summary_line

    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}{suggest(args.format, FORMATS)}")
    options = _compare_options(args)
    a, b = load_results(args.a), load_results(args.b)
    comparison = compare(a, b, options)  # before the warnings: a refusal is one line
    for rs in (a, b):
        for w in rs.warnings:
            print(f"harness: warning: {w}", file=sys.stderr)
    text = render(comparison, args.format, changes_only=args.changes_only)
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)
    print(f"harness: {summary_line(comparison)}", file=sys.stderr)
    return comparison.exit_code


def cmd_report(args) -> int:
    from .judge.compare import compare
    from .present.report import write_report

    from .judge.ab import is_ab_folder, load_ab

    if is_ab_folder(Path(args.run_dir)):  # harness ab's folder: side B, with the paired comparison
        if args.against:
            raise UsageError(f"{args.run_dir} is a harness ab folder, compared already: give no --against")
        rs, comparison = load_ab(Path(args.run_dir), _compare_options(args))
    else:
        rs = load_results(args.run_dir, strict=False)
        if rs.kind != "run":
            raise UsageError(f"{args.run_dir} is not a run folder")
        comparison = compare(load_results(args.against), rs, _compare_options(args)) if args.against else None
    output = args.output or str(Path(args.run_dir) / "report.html")
    check_output(output)
    try:
        path = write_report(rs, Path(output), comparison)
    except OSError as exc:
        raise UsageError(f"--output {output} cannot be written: {exc.strerror or exc}") from None
    print(f"harness: report written to {path}", file=sys.stderr)
    return comparison.exit_code if comparison is not None else EXIT_OK


def cmd_doctor(args) -> int:
    from .measure.doctor import run_doctor
    from .measure.environment import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return run_doctor(device, sys.stdout)


def _cpu_list_or_all(text: str, name: str = "--cpus"):
    """``all`` (not pinned) or a list of cores (:func:`_cpu_list`)."""
    return "all" if text.strip() == "all" else _cpu_list(text, name)


def _cpu_list(text: str, name: str = "--cpus") -> list[int]:
    """``3`` or ``2,3`` or ``0-3`` -> core numbers this process may use."""
    cores: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise ValueError(f"{name} {text!r}: expected core numbers such as 3, 2,3 or 0-3")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"{name} {text!r}: the range {part.strip()} runs backwards")
        cores += [c for c in range(first, last + 1) if c not in cores]
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return cores
    outside = [c for c in cores if c not in allowed]
    if outside:
        raise ValueError(f"{name} {text!r}: core(s) {', '.join(map(str, outside))} are not among the cores this "
                         f"process may use ({', '.join(map(str, sorted(allowed)))})")
    return cores


def cmd_ab(args) -> int:
    from .judge.ab import paired_comparison
    from .present.compare_render import render, summary_line
    from .run.ab import AB_FILE, ABOptions, ABRun, SideSource, sides_from_refs
    from .run.request import last_cores, resolve_run_device
    from .run.session import new_run_folder

    items = list(args.items)
    if bool(args.a_path) != bool(args.b_path):
        raise UsageError("--a-path and --b-path go together: give both checkouts")
    if args.a_path:
        for flag, path in (("--a-path", args.a_path), ("--b-path", args.b_path)):
            if not Path(path).is_dir():
                raise UsageError(f"{flag} {path} is not a folder")
        a = SideSource("a", args.a_path, Path(args.a_path).resolve())
        b = SideSource("b", args.b_path, Path(args.b_path).resolve())
        selection = items
    else:
        if len(items) < 2:
            raise UsageError("harness ab needs two refs, REF_A and REF_B (or --a-path and --b-path)")
        a, b = sides_from_refs(items[0], items[1], Path.cwd())
        selection = items[2:]
    cpus = args.cpus if args.cpus is not None else last_cores(1)
    threads = args.threads
    if threads is not None and cpus and threads > len(cpus):
        raise UsageError(f"--threads {threads} is more than the {len(cpus)} pinned core(s) (--cpus): the sides' "
                         f"threads would take turns on them")
    if threads is None:
        threads = max(1, len(cpus))
    if args.out:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--out {args.out} already exists and is not empty; choose a new folder")
    else:
        _, out = new_run_folder(f"ab-{time.strftime('%Y%m%d-%H%M%S')}")
    compare_options = _compare_options(args)
    options = ABOptions(profile=args.profile, device=resolve_run_device(args.device, "local"), pattern=args.pattern,
                        params=merge_param_items(args.param), variants=_variant_names(args.variant),
                        threads=threads, cpus=cpus, timeout_s=args.timeout, engine=args.engine,
                        progress=not args.no_progress, threshold=compare_options.thresholds["time"])
    if args.max_rounds is not None:
        options.max_rounds = args.max_rounds
        options.min_rounds = min(options.min_rounds, args.max_rounds)
    out = out.absolute()
    ABRun(a, b, selection, out, options, argv=args.argv).run()
    comparison = paired_comparison(out, compare_options)
    pin = f"cores {','.join(map(str, cpus))}" if cpus else "no pinning (this platform cannot)"
    header = (f"# harness ab: A {comparison.a_label} vs B {comparison.b_label}\n\n"
              f"Paired: both sides in one window, pinned to {pin}, {threads} thread(s), batches A B B A; "
              f"time verdicts on the median paired ratio B/A and its 95% CI (threshold {options.threshold:.0%}).\n\n")
    md = header + render(comparison, "markdown")
    write_output(str(out / "ab.md"), md)
    doc = json.loads((out / AB_FILE).read_text())
    doc["comparison"] = json.loads(render(comparison, "json"))
    write_output(str(out / AB_FILE), json.dumps(doc, indent=2, allow_nan=True) + "\n")
    if not args.quiet:
        sys.stdout.write(md)
    print(f"harness: {summary_line(comparison)}; written to {out}", file=sys.stderr)
    return comparison.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
