"""Merge run folders (the shards of one sweep, e.g. one per CI runner) into one run folder.

``harness merge RUN... --out DIR``. The runs must be the shards of one sweep: finished, the same
request (profile, device, filters, params), the same suite declarations and the same commit; no
case may be in two of them, and when they are shards (``--shard I/N``) every one of the N must be
there. Anything else is refused with one line. The merged folder is an ordinary run folder:
``run.json`` lists every planned case and the runs it came from, ``environment.json`` holds each
machine's fingerprint under ``nodes``, and ``records.jsonl`` every record, unchanged.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from ..key import case_ident, kv_text
from ..measure.environment import merge_node
from ..results import ENVIRONMENT_FILE, RECORDS_FILE, RUN_FILE, Record, RecordWriter, ResultSet, ResultsError, load_results, write_json
from ..results.store import RunFolderLock, make_folder, remove_made_folder

# what must be equal for runs to be parts of one sweep
REQUEST_FIELDS = ("profile", "device", "pattern", "param_overrides", "variants")


class MergeError(ResultsError):
    """The runs given to merge are not disjoint parts of one sweep."""


def _case_ident(case: dict[str, Any]) -> tuple[str, str, str]:
    return case_ident(case["suite"], case["variant"], case["params"])


def _label(case: dict[str, Any]) -> str:
    return f"{case['suite']}/{case['variant']} " + kv_text(case["params"], " ")


def _load(folder: Path) -> ResultSet:
    if not Path(folder).is_dir():
        raise MergeError(f"no such run folder: {folder}")
    rs = load_results(folder, strict=True)
    if rs.kind != "run" or not rs.meta:
        raise MergeError(f"{folder} is not a run folder (no {RUN_FILE})")
    if not rs.finished:
        raise MergeError(f"run {rs.run_id} in {folder} is {rs.meta.get('state', 'unfinished')}; "
                         f"finish it ('harness run --resume {folder}') before merging")
    return rs


def check_parts(runs: list[ResultSet]) -> None:
    """Refuse (MergeError, one line) runs that are not disjoint parts of one sweep."""
    first = runs[0]
    for rs in runs[1:]:
        for name in REQUEST_FIELDS:
            if (rs.meta.get(name) or None) != (first.meta.get(name) or None):
                raise MergeError(f"inconsistent runs: {first.run_id} has {name} {first.meta.get(name)!r}, "
                                 f"{rs.run_id} has {rs.meta.get(name)!r}")
        for suite, decl in rs.suites_meta.items():
            other = first.suites_meta.get(suite)
            if other and other.get("spec_hash") != decl.get("spec_hash"):
                raise MergeError(f"inconsistent runs: suite {suite!r} declares a different workload in "
                                 f"{first.run_id} and {rs.run_id} (spec hash {other.get('spec_hash')} vs "
                                 f"{decl.get('spec_hash')})")
        commits = [(r.environment.get("git") or {}).get("commit") for r in (first, rs)]
        if None not in commits and commits[0] != commits[1]:
            raise MergeError(f"inconsistent runs: {first.run_id} measured commit {commits[0][:12]}, "
                             f"{rs.run_id} commit {commits[1][:12]}")
    owner: dict[tuple, str] = {}
    for rs in runs:
        planned = rs.meta.get("cases") or [{"suite": r.suite, "variant": r.variant, "params": r.params}
                                           for r in rs.records]
        for case in planned:
            key = _case_ident(case)
            if key in owner:
                raise MergeError(f"overlapping runs: case {_label(case)} is in both {owner[key]} and {rs.run_id}")
            owner[key] = rs.run_id
    shards = [rs.meta.get("shard") for rs in runs]
    if not any(shards):
        raise MergeError(f"unrelated runs: {first.run_id} and {runs[1].run_id} are whole runs, not shards of one "
                         f"sweep; merge joins the shards of one plan (harness run --shard I/N)")
    if any(shards):
        if not all(shards):
            plain = next(rs.run_id for rs in runs if not rs.meta.get("shard"))
            raise MergeError(f"inconsistent runs: {plain} is a full run, the others are shards")
        counts = {s.split("/")[1] for s in shards}
        if len(counts) > 1:
            raise MergeError(f"inconsistent shards: the runs were cut into different numbers of shards ({', '.join(sorted(counts))})")
        n = int(counts.pop())
        missing = [f"{i}/{n}" for i in range(1, n + 1) if f"{i}/{n}" not in shards]
        if missing:
            raise MergeError(f"missing shard(s) {', '.join(missing)}: merge needs all {n} shards of the sweep")


def merge_runs(folders: list[str | Path], out: str | Path) -> ResultSet:
    """Merge the run folders into the new run folder ``out``; returns it loaded."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"--out {out} already exists and is not empty; choose a new folder")
    if len(folders) < 2:
        raise MergeError("merge needs at least two run folders")
    resolved = [Path(f).resolve() for f in folders]
    if len(set(resolved)) < len(resolved):
        raise MergeError("the same run folder is given twice")
    runs = [_load(Path(f)) for f in folders]
    check_parts(runs)
    runs.sort(key=lambda rs: int(rs.meta["shard"].split("/")[0]) if rs.meta.get("shard") else 0)

    first = runs[0]
    meta = {k: v for k, v in first.meta.items() if k not in ("pid", "resumed_at", "status_counts")}
    suites: dict[str, Any] = {}
    locations: dict[str, Any] = {}
    cases: list[dict] = []
    failures: list[dict] = []
    for rs in runs:
        suites.update(rs.suites_meta)
        locations.update(rs.meta.get("suite_locations") or {})
        cases += rs.meta.get("cases") or []
        failures += [f for f in rs.meta.get("load_failures") or [] if f not in failures]
    records: list[Record] = [r for rs in runs for r in rs.records]
    order = {_case_ident(c): i for i, c in enumerate(cases)}
    records.sort(key=lambda r: order.get(r.key.ident, len(order)))
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    meta.update(
        run_id=out.name, shard=None, suites=suites, suite_locations=locations, cases=cases, n_cases=len(cases),
        load_failures=failures, state="finished", finished=True, status_counts=counts,
        started_at=min(str(rs.meta.get("started_at", "")) for rs in runs),
        finished_at=max(str(rs.meta.get("finished_at", "")) for rs in runs),
        merged_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        merged_from=[{"run_id": rs.run_id, "folder": str(rs.folder), "shard": rs.meta.get("shard"),
                      "executor": rs.meta.get("executor") or "local", "n_records": len(rs.records)} for rs in runs],
    )

    environment = {k: v for k, v in first.environment.items() if k != "nodes"}
    for rs in runs:
        env = rs.environment
        nodes = env.get("nodes") or {}
        if nodes:  # a Ray run: its nodes as they are
            for node_id, node in nodes.items():
                for slot, name in (node.get("gpus") or {None: None}).items():
                    environment = merge_node(environment, node_id, node,
                                             {"host": node.get("host"), "node_ip": node.get("node_ip"),
                                              "cuda_visible_devices": slot, "gpu_name": name})
        else:  # one machine: the run's own fingerprint is its node
            environment = merge_node(environment, str(env.get("host") or rs.run_id), env,
                                     {"host": env.get("host"), "cuda_visible_devices": env.get("device"),
                                      "gpu_name": env.get("gpu_name")})

    made = None  # the folders this merge made (removed again when it cannot finish)
    writing = False  # the files in --out are this merge's
    try:
        made = make_folder(out)
        with RunFolderLock(out):
            if any(out.iterdir()):  # another writer took the folder since the check above
                raise MergeError(f"--out {out} already exists and is not empty; choose a new folder")
            writing = True
            write_json(out / ENVIRONMENT_FILE, environment)
            with RecordWriter(out) as writer:
                for record in records:
                    writer.write(record)
            write_json(out / RUN_FILE, meta)
    except OSError as exc:  # a full disk: no half-made run folder is left
        if writing:  # the files are this merge's; a folder it made goes too (one that was there stays)
            for name in (RUN_FILE, ENVIRONMENT_FILE, RECORDS_FILE):
                try:
                    (out / name).unlink(missing_ok=True)
                except OSError:
                    pass
            remove_made_folder(made)
        raise MergeError(f"cannot write {out}: {exc.strerror or exc}") from None
    return load_results(out)
