"""Run one sweep over a Ray cluster (or an embedded local Ray): one task per grid point.

Imported only for ``harness run --executor ray``; Ray is the optional extra
``pip install 'dl-harness[ray]'``.

- One Ray task per grid point (:attr:`harness.plan.Case.setup_key`): the variants of a point run
  on one GPU, in order, in one worker process that shares the point's ``prepare`` among them
  (the in-process :class:`harness.run.executors.CaseExecutor`), so variants stay comparable.
- A CUDA case's task asks for ``num_gpus=1`` (Ray reserves a GPU and sets
  ``CUDA_VISIBLE_DEVICES``); other cases ask for ``cpus_per_task`` CPUs.
- The task is a streaming generator: each record comes back as its case ends and the session
  writes it at once, so a killed driver loses nothing finished and ``--resume`` reruns only
  cases without a record.
- Failures are records: a worker that dies is ``crashed`` (``oom`` when Ray's memory monitor
  killed it), a case past the time limit that the worker's own alarm cannot stop is cancelled
  (the worker is killed) and ``timeout``. The cases of that grid point not yet run go to a fresh
  task; the sweep goes on.
- Each record says where it ran (``info["placement"]``: node id, host, IP, worker pid,
  ``CUDA_VISIBLE_DEVICES``, GPU name and UUID); each node's fingerprint is reported once through
  :meth:`RayExecutor.watch_nodes`, and the session keeps it in ``environment.json["nodes"]``.

Suite classes reach a worker by location (file and qualified name), not by pickling; on a
cluster every node needs the same checkout (or installed package) at the same path.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from ..plan import Case
from ..results import Record
from ..declare.suite import Suite

RAY_EXTRA = "dl-harness[ray]"
INSTALL_HINT = f"--executor ray needs Ray, which is not installed: pip install '{RAY_EXTRA}'"


class RayNotInstalled(Exception):
    """Ray is missing; the message names the extra that installs it."""


def require_ray():
    """The ``ray`` module, or :class:`RayNotInstalled` with the install line."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalled(INSTALL_HINT) from None
    return ray


# --------------------------------------------------------------------------- inside a Ray worker
_NODE_CACHE: dict[str, dict] = {}


def gpu_identity(device: str) -> dict[str, Any]:
    """Name and UUID of the GPU this process sees as ``device``; {} for a CPU case."""
    if not device.startswith("cuda"):
        return {}
    import torch

    props = torch.cuda.get_device_properties(0)
    uuid = getattr(props, "uuid", None)
    return {"gpu_name": props.name, "gpu_uuid": str(uuid) if uuid is not None else None}


def placement(node_id: str, node_ip: str | None, device: str, gpu_probe: Callable = gpu_identity) -> dict[str, Any]:
    """Where this worker runs: node, host, pid, visible GPUs and the GPU's identity."""
    return {
        "node_id": node_id,
        "host": socket.gethostname(),
        "node_ip": node_ip,
        "worker_pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **gpu_probe(device),
    }


def node_fingerprint(device: str) -> dict[str, Any]:
    """This node's environment fingerprint, computed once per worker process and device."""
    if device not in _NODE_CACHE:
        from ..measure.environment import fingerprint

        _NODE_CACHE[device] = fingerprint(device)
    return _NODE_CACHE[device]


def run_point(locations: dict[str, tuple[str, str]], run_id: str, threads: int | None, cases: list[Case],
              timeout_s: float | None, node_id: str, node_ip: str | None):
    """The body of one task: yield ("where", placement, fingerprint), then one record per case.

    Each record's JSON text is yielded as soon as the case ends, in the cases' order.
    """
    import torch

    from ..declare.registry import load_suite_class
    from .executors import CaseExecutor, warm_up_engine

    if threads:
        torch.set_num_threads(threads)
    device = cases[0].device
    where = placement(node_id, node_ip, device)
    suites = {name: load_suite_class(path, qual) for name, (path, qual) in locations.items()
              if name in {c.suite for c in cases}}
    executor = CaseExecutor(suites, run_id=run_id)
    # the engine's first-call costs and the suites' imports are paid before reporting in: the
    # driver's clock for the first case starts at the report (as an isolated worker's "ready")
    warm_up_engine()
    yield ("where", where, node_fingerprint(device))
    try:
        for case in cases:
            record = executor.run(case, timeout_s)
            record.info["placement"] = where
            yield ("record", record.to_json())
    finally:
        executor.close()


def _ray_task_body(locations, run_id, threads, cases, timeout_s):
    import ray

    ctx = ray.get_runtime_context()
    ip = None
    try:
        ip = ray.util.get_node_ip_address()
    except Exception:
        pass
    yield from run_point(locations, run_id, threads, cases, timeout_s, ctx.get_node_id(), ip)


# --------------------------------------------------------------------------- the driver
@dataclass
class _Task:
    """One submitted grid point: its generator and how far it got."""

    cases: list[Case]
    gen: Any
    submitted: float
    started: float | None = None  # when the worker reported in (the first case starts)
    last_event: float | None = None
    done: int = 0
    where: dict[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> Case | None:
        return self.cases[self.done] if self.done < len(self.cases) else None


def group_by_point(cases: list[Case]) -> list[list[Case]]:
    """Cases grouped by grid point (setup key), in plan order."""
    groups: "OrderedDict[tuple, list[Case]]" = OrderedDict()
    for case in cases:
        groups.setdefault(case.setup_key, []).append(case)
    return list(groups.values())


class RayExecutor:
    """Runs the cases of a session as Ray tasks, one per grid point, streaming records back.

    ``address``: a running cluster (``"auto"``, ``"ray://..."``, ``"host:port"``); without it an
    already initialised Ray in this process is used, else an embedded local instance starts
    (``init_kwargs`` go to ``ray.init``, e.g. ``num_cpus``). ``gpus_per_task`` overrides the
    GPU request (default: 1 for CUDA cases, 0 otherwise). ``kill_grace_s``: how long past the
    case time limit a task may run (its own alarm fires first) before it is cancelled.
    """

    def __init__(self, suites: dict[str, type[Suite]], run_id: str = "", threads: int | None = None, *,
                 address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float | None = None,
                 kill_grace_s: float = 10.0, init_kwargs: dict | None = None, poll_s: float = 0.2):
        from ..declare.registry import class_location

        self.ray = require_ray()
        self.locations = {name: class_location(cls) for name, cls in suites.items()}
        self.run_id, self.threads, self.address = run_id, threads, address
        self.cpus_per_task, self.gpus_per_task = cpus_per_task, gpus_per_task
        self.kill_grace_s, self.poll_s = kill_grace_s, poll_s
        self.init_kwargs = dict(init_kwargs or {})
        self._started_ray = False
        self._tasks: list[_Task] = []
        self._node_callback: Callable | None = None
        self._seen: set[tuple] = set()

    # -- lifecycle
    def watch_nodes(self, callback: Callable[[str, dict, dict], None]) -> None:
        """``callback(node_id, fingerprint, placement)`` once per (node, GPU) a task ran on."""
        self._node_callback = callback

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        if self.address:
            kwargs["address"] = self.address
        ray.init(**kwargs)
        self._started_ray = True

    def close(self) -> None:
        for task in self._tasks:
            self._cancel(task)
        self._tasks = []
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._started_ray = False

    def _cancel(self, task: _Task) -> None:
        try:
            self.ray.cancel(task.gen, force=True)
        except Exception:  # already finished or gone
            pass

    # -- submitting
    def _resources(self, case: Case) -> dict[str, float]:
        gpus = self.gpus_per_task if self.gpus_per_task is not None else (1 if case.device.startswith("cuda") else 0)
        return {"num_cpus": self.cpus_per_task, "num_gpus": gpus}

    def _submit(self, cases: list[Case], timeout_s: float | None) -> _Task:
        remote = self.ray.remote(_ray_task_body).options(
            num_returns="streaming", max_retries=0, name=f"harness {cases[0].label()}", **self._resources(cases[0]))
        gen = remote.remote(self.locations, self.run_id, self.threads, cases, timeout_s)
        return _Task(cases, gen, time.monotonic())

    # -- the loop
    def run_all(self, cases: list[Case], timeout_s: float | None, on_record: Callable[[Record], None]) -> None:
        for case in cases:
            if case.device.startswith("cuda:"):
                raise ValueError(f"--executor ray gives each task one GPU of its own; plan cases on 'cuda', "
                                 f"not {case.device!r}")
        self._connect()
        self._tasks = [self._submit(group, timeout_s) for group in group_by_point(cases)]
        while self._tasks:
            ready, _ = self.ray.wait([t.gen for t in self._tasks], num_returns=1, timeout=self.poll_s)
            ready_ids = {id(g) for g in ready}
            now = time.monotonic()
            for task in list(self._tasks):
                if id(task.gen) in ready_ids:
                    self._advance(task, timeout_s, on_record)
                elif self._overdue(task, timeout_s, now):
                    self._cancel(task)
                    self._fail_current(task, "timeout", f"ran past the {timeout_s:g} s case time limit; "
                                                        "the Ray task was cancelled and its worker killed",
                                       timeout_s, on_record)

    def _overdue(self, task: _Task, timeout_s: float | None, now: float) -> bool:
        return bool(timeout_s) and task.last_event is not None and now - task.last_event > timeout_s + self.kill_grace_s

    def _advance(self, task: _Task, timeout_s: float | None, on_record) -> None:
        ray = self.ray
        try:
            ref = next(task.gen)
        except StopIteration:
            self._tasks.remove(task)
            if task.current is not None:  # ended early without an error: should not happen
                self._fail_current(task, "crashed", "the Ray task ended before running this case", timeout_s,
                                   on_record)
            return
        try:
            item = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the worker died or the task failed
            status, reason = _failure_of(ray, exc)
            self._fail_current(task, status, reason, timeout_s, on_record)
            return
        now = time.monotonic()
        task.last_event = now
        if item[0] == "where":
            task.started, task.where = now, item[1]
            key = (item[1].get("node_id"), item[1].get("gpu_uuid") or item[1].get("cuda_visible_devices"))
            if key not in self._seen:
                self._seen.add(key)
                if self._node_callback is not None:
                    self._node_callback(item[1].get("node_id"), item[2], item[1])
            return
        task.done += 1
        on_record(Record.from_dict(json.loads(item[1])))

    def _fail_current(self, task: _Task, status: str, reason: str, timeout_s, on_record) -> None:
        """Record the case in progress with ``status``; the rest of its grid point goes to a new task."""
        if task in self._tasks:
            self._tasks.remove(task)
        case = task.current
        if case is None:
            return
        started = task.last_event if task.last_event is not None else task.submitted
        info = {"placement": task.where} if task.where else {}
        on_record(Record(suite=case.suite, variant=case.variant, params=case.params_dict, key=case.key,
                         device=case.device,
                         status=status, reason=reason, run_id=self.run_id,
                         duration_s=time.monotonic() - started, info=info))
        rest = task.cases[task.done + 1:]
        if rest:
            self._tasks.append(self._submit(rest, timeout_s))


def _failure_of(ray, exc: BaseException) -> tuple[str, str]:
    """A Ray error of a task -> (status, reason)."""
    exc_mod = ray.exceptions
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, exc_mod.OutOfMemoryError):
        return "oom", f"Ray's memory monitor killed the worker: {text}"
    if isinstance(exc, (exc_mod.WorkerCrashedError, exc_mod.NodeDiedError, exc_mod.LocalRayletDiedError)):
        return "crashed", f"the Ray worker died ({type(exc).__name__}): {text}"
    if isinstance(exc, exc_mod.TaskCancelledError):
        return "crashed", "the Ray task was cancelled"
    if isinstance(exc, exc_mod.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None:
            return "failed", f"the Ray task failed: {type(cause).__name__}: {str(cause).strip()[:300]}"
        return "failed", f"the Ray task failed: {text}"
    return "crashed", f"{type(exc).__name__}: {text}"
