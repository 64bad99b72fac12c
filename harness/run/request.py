"""What a run is asked for: one typed, frozen :class:`RunRequest`, built in one place.

``harness run`` (after argparse has turned the command line into typed values), the Python
function :func:`harness.run_suites` and ``harness run --resume`` (from ``run.json``) all call
:func:`build_request`; it types the param overrides by the suites' declared values, resolves
the device and applies the Ray policy. The session writes the request into ``run.json`` with
:meth:`RunRequest.to_json` and a resumed run reads it back with :func:`request_from_json`.

``run.json`` holds the values as JSON holds them: ints stay ints, floats floats, booleans
booleans. Two encodings: a param value declared as a tuple is a JSON list (typed back to a
tuple by the suite's declaration on resume), and the shard is its ``"I/N"`` text (what
``harness merge`` reads). Run folders of earlier versions hold param values as text; those are
parsed by the same function that parses the command line.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

from ..declare.suite import Suite
from ..plan import Case, PlanError, parse_shard, plan_cases, shard_cases, type_overrides

# the fields of run.json that hold the request (argv is recorded, never read back)
REQUEST_KEYS = ("argv", "profile", "device", "pattern", "param_overrides", "variants", "isolate", "supervise",
                "worker_per_case", "executor", "ray_address", "shard", "timeout_s", "threads", "threads_source",
                "rounds", "cpus", "pin")


class Shard(NamedTuple):
    """The ``index``-th (1-based) of ``count`` shards of a plan; written ``I/N``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def as_shard(value: Shard | tuple[int, int] | str | None) -> Shard | None:
    """A shard from ``(I, N)`` or its ``"I/N"`` text; PlanError with one line when it is not one."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return Shard(*parse_shard(value))
    return Shard(*parse_shard(f"{value[0]}/{value[1]}"))


def strictly_positive(value: Any, name: str) -> int:
    """``value`` as a whole number of at least 1 (rounds, threads); ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


# A time limit above a week is a typo, and one near float's end overflows the alarm and the clocks.
MAX_TIMEOUT_S = 7 * 24 * 3600.0
# Threads beyond a few per usable core only oversubscribe; OpenMP crashes at tens of thousands.
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_count(value: Any, name: str) -> int:
    """``value`` as a thread count from 1 to ``THREADS_PER_CORE`` x the usable cores."""
    value = strictly_positive(value, name)
    cores = usable_cores()
    if value > THREADS_PER_CORE * cores:
        raise ValueError(f"{name} must be at most {THREADS_PER_CORE * cores} ({THREADS_PER_CORE} x the {cores} usable "
                         f"cores), not {value}")
    return value


def positive_seconds(value: Any, name: str) -> float:
    """``value`` as a finite number of seconds above 0 and at most a week (a time limit); ValueError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        shown = f"{value:g}" if isinstance(value, float) else value
        raise ValueError(f"{name} must be a positive number of seconds, not {shown}")
    if value > MAX_TIMEOUT_S:
        raise ValueError(f"{name} must be at most a week ({MAX_TIMEOUT_S:g} s), not {value:g}")
    return float(value)


@dataclass(frozen=True)
class RunRequest:
    """How a run executes and what it records as its request, with typed values.

    ``param_overrides`` maps a param name to the tuple of its values (of the declared type).
    ``threads_source`` says how the thread count was chosen (``"given"``, or why a default).
    ``progress`` is how the run shows itself, not part of what is recorded.
    """

    device: str = "cpu"
    profile: str | None = None
    isolate: bool = False
    supervise: bool = True  # cases run in a child process watched by this one (False: in this process)
    worker_per_case: bool = False  # isolated, and a fresh worker for every case
    timeout_s: float | None = None
    threads: int | None = None
    progress: bool = False
    pattern: str | None = None
    param_overrides: Mapping[str, tuple] = field(default_factory=dict)
    variants: tuple[str, ...] = ()
    argv: tuple[str, ...] | None = None
    executor: str = "local"  # "local" (this process or --isolate workers) or "ray"
    ray_address: str | None = None  # with executor "ray": the cluster to join (None: an embedded local Ray)
    shard: Shard | None = None  # this run holds the I-th of N shards of the plan (by grid point)
    threads_source: str = "given"
    rounds: int = 1  # passes over all cases (round 2 starts after round 1 has ended)
    # a CPU run's cores: None: the last ``threads`` cores this process may use; ``pin`` False: any
    cpus: tuple[int, ...] | None = None
    pin: bool = True

    def __post_init__(self) -> None:
        # sequences given as lists (Python callers) are held as tuples, so the request stays frozen
        set_ = object.__setattr__
        set_(self, "param_overrides", {k: tuple(v) for k, v in dict(self.param_overrides).items()})
        set_(self, "variants", tuple(self.variants))
        set_(self, "argv", tuple(self.argv) if self.argv is not None else None)
        set_(self, "shard", as_shard(self.shard))
        set_(self, "cpus", tuple(self.cpus) if self.cpus is not None else None)

    def to_json(self) -> dict[str, Any]:
        """The request as ``run.json`` holds it (see the module's docstring for the encodings)."""
        doc = {k: v for k, v in asdict(self).items() if k in REQUEST_KEYS}
        doc.update(param_overrides={k: list(v) for k, v in self.param_overrides.items()},
                   variants=list(self.variants), argv=list(self.argv) if self.argv is not None else None,
                   shard=str(self.shard) if self.shard else None,
                   cpus=list(self.cpus) if self.cpus is not None else None)
        return doc


def resolve_run_device(device: str, executor: str) -> str:
    """The device a run uses, and the Ray policy: with Ray the GPUs are the cluster's (the driver
    need not have one) and each task gets a GPU of its own, so ``cuda:N`` makes no sense."""
    from ..measure.environment import resolve_device
    from .ray_executor import RayNotInstalled, require_ray

    if executor == "ray":
        try:
            require_ray()
        except RayNotInstalled as exc:
            raise PlanError(str(exc)) from None
    try:
        resolved = "cuda" if executor == "ray" and device == "cuda" else resolve_device(device)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    if executor == "ray" and resolved.startswith("cuda:"):
        raise PlanError(f"--executor ray gives each task a GPU of its own; use --device cuda, not {resolved}")
    return resolved


def build_request(
    suites: Sequence[type[Suite]],
    *,
    profile: str | None = "quick",
    device: str = "auto",
    pattern: str | None = None,
    params: Mapping[str, Sequence[Any]] | None = None,
    variants: Sequence[str] = (),
    isolate: bool = False,
    supervise: bool = True,
    worker_per_case: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    shard: Shard | tuple[int, int] | str | None = None,
    timeout_s: float | None = None,
    threads: int | None = None,
    threads_source: str = "given",
    rounds: int = 1,
    progress: bool = False,
    argv: Sequence[str] | None = None,
    cpus: Sequence[int] | None = None,
    pin: bool = True,
) -> RunRequest:
    """The one way a run's request is made (``harness run``, ``run_suites``, ``--resume``).

    The values are typed already (argparse, a Python caller or ``run.json`` gave them); the
    param overrides are typed by the suites' declared values here, and the device is resolved.
    """
    if ray_address and executor != "ray":
        raise PlanError("--ray-address needs --executor ray")
    if executor == "ray" and (isolate or worker_per_case or not supervise):
        raise PlanError("--isolate, --worker-per-case and --no-supervisor choose where a local run's cases run; "
                        "with --executor ray each grid point runs in a Ray worker")
    if not supervise and (isolate or worker_per_case):
        raise PlanError("--no-supervisor runs the cases in this process, --isolate and --worker-per-case in "
                        "worker processes: give one")
    return RunRequest(
        device=resolve_run_device(device, executor), profile=profile, isolate=bool(isolate) or bool(worker_per_case),
        supervise=bool(supervise), worker_per_case=bool(worker_per_case), timeout_s=timeout_s,
        threads=threads, progress=progress, pattern=pattern, param_overrides=type_overrides(list(suites), params),
        variants=tuple(variants), argv=argv, executor=executor, ray_address=ray_address, shard=shard,
        threads_source=threads_source, rounds=rounds, cpus=tuple(cpus) if cpus is not None else None, pin=bool(pin),
    )


def request_from_json(meta: Mapping[str, Any], suites: Sequence[type[Suite]], *, progress: bool = False,
                      ray_address: str | None = None) -> RunRequest:
    """The request stored in ``run.json`` (``ray_address`` replaces the stored one)."""
    return build_request(
        suites, profile=meta.get("profile"), device=meta.get("device") or "cpu", pattern=meta.get("pattern"),
        params=meta.get("param_overrides") or {}, variants=meta.get("variants") or (),
        isolate=bool(meta.get("isolate")), supervise=meta.get("supervise", True) is not False,
        worker_per_case=bool(meta.get("worker_per_case")), executor=meta.get("executor") or "local",
        ray_address=ray_address or meta.get("ray_address"), shard=meta.get("shard"), timeout_s=meta.get("timeout_s"),
        threads=meta.get("threads"), threads_source=meta.get("threads_source") or "given",
        rounds=int(meta.get("rounds") or 1), progress=progress, argv=meta.get("argv"), cpus=meta.get("cpus"),
        pin=meta.get("pin", True) is not False,
    )


def last_cores(count: int = 1) -> list[int]:
    """The last ``count`` cores this process may use (core 0 takes most of a machine's interrupts);
    [] where the platform does not say."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []
    return allowed[-max(1, count):]


def pin_cores(request: RunRequest) -> tuple[list[int] | None, str]:
    """Pin this process (and the workers it starts) for a CPU run: (the cores, '') or (None, why not).

    The cores are ``request.cpus``, else the last ``threads`` cores this process may use (core 0
    takes most of a machine's interrupts), so two runs on one machine run on the same cores and
    their numbers compare. The caller puts the affinity back when the run ends."""
    if request.device != "cpu" or request.executor == "ray":
        return None, "not a local CPU run"
    if not request.pin:
        return None, "not pinned (--cpus all)"
    if not hasattr(os, "sched_setaffinity"):
        return None, "this platform cannot pin a process to cores (no sched_setaffinity)"
    want = list(request.cpus) if request.cpus else last_cores(request.threads or 1)
    try:
        os.sched_setaffinity(0, want)
    except OSError as exc:
        return None, f"cannot pin to cores {want}: {exc.strerror or exc}"
    return want, ""


def plan_request(request: RunRequest, suites: Sequence[type[Suite]]) -> list[Case]:
    """The cases a request runs: the plan of its suites, cut to its shard."""
    cases = plan_cases(list(suites), request.profile or "quick", request.device, request.pattern,
                       dict(request.param_overrides), list(request.variants))
    if request.shard:
        cases = shard_cases(cases, *request.shard)
        if not cases:
            raise PlanError(f"shard {request.shard} holds no case: the plan has fewer than "
                            f"{request.shard.count} grid points")
    return cases
