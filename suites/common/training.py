"""One training step, memory accounting, and the largest batch that fits under a memory cap.

:class:`TrainStep` is forward, loss, backward and an AdamW step, with optional autocast, a
gradient scaler and a custom forward (activation checkpointing). Gradient buffers are kept
between steps (zeroed, not freed) by default, so that what a step allocates above its starting
point is its activations and temporaries, and params + grads + optimizer state is what stays.

:func:`largest_batch` is a bounded search, doubling then bisection, over any ``probe(batch)``
that says whether a batch fits; :class:`IsolatedProbe` answers by running a target function in
a fresh worker process per probe, so that an out-of-memory error, or the OS killing the worker,
is an answer ("does not fit") and never a failure of the run, and no probe inherits the
allocator state of another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from harness.measure import measure_peak_memory
from harness.run.executors import is_oom

from .models import ModelSpec, build_model, gpt_training_flops, loss_fn, make_batches

MIB = 1024 * 1024


# --------------------------------------------------------------------------- one step
def plain_forward(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return model(inputs)


def make_optimizer(model: torch.nn.Module, lr: float = 1e-3, eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW as used to train ViTs and GPTs (weight decay 0.01)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, eps=eps)


@dataclass
class TrainStep:
    """Forward, loss, backward and optimizer step of one model.

    ``forward(model, inputs)`` computes the output (default: ``model(inputs)``); ``autocast``
    is a dtype for ``torch.autocast`` or None; ``scaler`` a ``torch.amp.GradScaler`` or None;
    ``context`` a factory of a context entered around the whole step (e.g. TF32 settings).
    ``keep_grads`` zeroes gradients in place instead of freeing them.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = plain_forward
    autocast: torch.dtype | None = None
    scaler: Any = None
    context: Callable[[], Any] = contextlib.nullcontext
    keep_grads: bool = True
    skipped_steps: int = 0

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, count_skips: bool = False) -> torch.Tensor:
        device_type = targets.device.type
        cast = torch.autocast(device_type, dtype=self.autocast) if self.autocast is not None else contextlib.nullcontext()
        with self.context():
            with cast:
                loss = loss_fn(self.forward(self.model, inputs), targets)
            if self.scaler is None:
                loss.backward()
                self.optimizer.step()
            else:
                scale_before = self.scaler.get_scale() if count_skips else None
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                # The scaler skips a step (and backs its scale off) when gradients overflowed.
                if count_skips and self.scaler.get_scale() < scale_before:
                    self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=not self.keep_grads)
        return loss.detach()


def training_step_flops(spec: ModelSpec, count: Callable[[], int]) -> tuple[float, str]:
    """FLOPs of one forward+backward and the method that produced them.

    GPT stacks: the analytic formula (causal attention halved), "formula". Other models:
    ``count()`` (FlopCounterMode over one step), "FlopCounterMode".
    """
    if spec.arch == "gpt":
        return gpt_training_flops(spec), "formula"
    return float(count()), "FlopCounterMode"


def clone_model(model: torch.nn.Module, device: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A deep copy of ``model`` on ``device`` (and ``dtype``), so runs never share weights."""
    import copy

    twin = copy.deepcopy(model)
    return twin.to(device=device, dtype=dtype) if dtype is not None else twin.to(device)


# --------------------------------------------------------------------------- memory
def tensors_bytes(tensors) -> int:
    """Bytes held by distinct tensor storages among ``tensors`` (tied weights counted once)."""
    seen: set = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        key = (t.device, t.untyped_storage().data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def static_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state: what a step needs besides activations."""
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values()]
    return {
        "params": tensors_bytes(params),
        "grads": tensors_bytes(p.grad for p in params if p.grad is not None),
        "optimizer_state": tensors_bytes(state),
    }


@dataclass
class StepMemory:
    """Memory of one training step: what persists, and the peak of the step above it."""

    static: dict[str, int]
    batch_bytes: int
    step_peak_bytes: int  # peak during the step above what was allocated before it

    @property
    def static_bytes(self) -> int:
        return sum(self.static.values())

    @property
    def activation_bytes(self) -> int:
        """Peak minus params, grads, optimizer state and the batch."""
        return self.step_peak_bytes

    @property
    def total_bytes(self) -> int:
        return self.static_bytes + self.batch_bytes + self.step_peak_bytes

    def total_metric(self) -> dict[str, Any]:
        """``total_bytes`` in MiB as a metric value, with its parts in bytes."""
        parts = {f"{k}_bytes": v for k, v in self.static.items()}
        return {"value": self.total_bytes / MIB, "bytes": self.total_bytes, "batch_bytes": self.batch_bytes, **parts}


def measure_step_memory(step: TrainStep, inputs: torch.Tensor, targets: torch.Tensor, device: str) -> StepMemory:
    """Peak memory of one step after a first one has created gradients and optimizer state."""
    if not step.model.training:
        raise ValueError("the model must be in training mode")
    if not step.keep_grads:
        raise ValueError("measure_step_memory needs keep_grads=True (gradient buffers that persist)")
    if not step.optimizer.state:
        step(inputs, targets)
    static = static_memory(step.model, step.optimizer)
    peak, _ = measure_peak_memory(lambda: step(inputs, targets), device)
    return StepMemory(static, tensors_bytes((inputs, targets)), int(peak))


# --------------------------------------------------------------------------- largest batch
@dataclass
class ProbeResult:
    """One probe: whether ``batch`` fits, and why not when it does not."""

    batch: int
    fits: bool
    status: str  # ok | over_cap | oom | crashed | failed | timeout
    peak_bytes: int | None = None
    detail: str = ""
    seconds: float = 0.0


@dataclass
class SearchResult:
    """The largest batch that fits (0: not even one sample), with every probe made."""

    largest: int
    probes: list[ProbeResult] = field(default_factory=list)
    complete: bool = True  # False when the search stopped on a failure, a limit or the probe budget
    note: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "note": self.note,
            "probes": [(p.batch, p.status) for p in self.probes],
        }


class SearchFailed(Exception):
    """A probe failed for a reason other than memory: the answer would be meaningless."""


def largest_batch(
    probe: Callable[[int], ProbeResult | bool],
    start: int = 1,
    limit: int = 1 << 16,
    max_probes: int = 32,
) -> SearchResult:
    """Largest batch in [1, ``limit``] for which ``probe`` says it fits (0: not even 1).

    A bounded exponential search, then bisection: from ``start`` (a guess; 1 when there is
    none) the steps away from it double (start+1, +2, +4, ...; downwards when ``start`` does not
    fit) until the answer changes, then the bracket is bisected. A good guess costs a few
    probes, a bad one O(log) more. Assumes fitting is monotone in the batch. An out-of-memory
    answer is a misfit; a probe that fails otherwise ends the search, marked incomplete, with
    the reason, as do ``limit`` still fitting and ``max_probes``.
    """
    if not 1 <= start <= limit:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    result = SearchResult(0)

    def fits(batch: int) -> bool | None:
        if len(result.probes) >= max_probes:
            result.complete, result.note = False, f"stopped after {max_probes} probes"
            return None
        answer = probe(batch)
        if isinstance(answer, bool):
            answer = ProbeResult(batch, answer, "ok" if answer else "over_cap")
        result.probes.append(answer)
        if answer.status in ("failed", "timeout"):
            result.complete, result.note = False, f"batch {batch}: {answer.status}: {answer.detail}"
            return None
        return answer.fits

    first = fits(start)
    if first is None:
        return result
    lo, hi = (start, None) if first else (0, start)  # lo fits (0: nothing does), hi does not
    step = 1
    while hi is None:  # gallop upwards
        if lo >= limit:
            result.complete, result.note = False, f"batch {limit} (the search limit) still fits"
            result.largest = lo
            return result
        batch = min(lo + step, limit)
        answer = fits(batch)
        if answer is None:
            result.largest = lo
            return result
        lo, hi = (batch, None) if answer else (lo, batch)
        step *= 2
    while lo == 0 and hi > 1:  # gallop downwards: nothing known to fit yet
        batch = max(hi - step, 1)
        answer = fits(batch)
        if answer is None:
            return result
        if answer:
            lo = batch
        else:
            hi = batch
        step *= 2
    while hi - lo > 1:  # bisect
        batch = (lo + hi) // 2
        answer = fits(batch)
        if answer is None:
            break
        if answer:
            lo = batch
        else:
            hi = batch
    result.largest = lo
    return result


def _probe_child(conn, target: Callable[[int], int], batch: int) -> None:
    """Worker process: run ``target(batch)`` and send back (status, peak bytes, detail)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        peak = target(batch)
        conn.send(("ok", int(peak), ""))
    except BaseException as exc:  # noqa: BLE001 - the parent decides what it means
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        conn.send(("oom" if is_oom(exc) else "failed", None, f"{type(exc).__name__}: {text}"))
    finally:
        conn.close()


class ProbeUnavailable(Exception):
    """Worker processes cannot be started from here."""


class IsolatedProbe:
    """``probe(batch)``: run ``target(batch) -> peak bytes`` in a fresh worker process.

    The batch fits when the target returns a peak at most ``cap_bytes``. It does not fit when
    the target raises an out-of-memory error (a CUDA target may cap the allocator itself) or
    the worker is killed by SIGKILL (the OS out-of-memory killer). Other errors and timeouts
    are failures. ``target`` must be picklable (a module-level function or a partial of one).

    ``start_method`` "forkserver" (default where available) forks each worker from a clean
    server process that has imported torch once, so a probe costs a fork, not an interpreter
    start; "spawn" starts a new interpreter per probe. Neither inherits the caller's CUDA
    context or allocator.
    """

    def __init__(self, target: Callable[[int], int], cap_bytes: int, timeout_s: float = 300.0,
                 start_method: str | None = None):
        self.target = target
        self.cap_bytes = int(cap_bytes)
        self.timeout_s = timeout_s
        methods = mp.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")

    def _context(self):
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(["torch", "suites.common.training"])
        return ctx

    def __call__(self, batch: int) -> ProbeResult:
        if mp.current_process().daemon:
            raise ProbeUnavailable(
                "this process is a daemonic worker (harness run --isolate), which may not start "
                "the probe processes; run without --isolate for the largest-batch search"
            )
        ctx = self._context()
        t0 = time.perf_counter()
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_probe_child, args=(child, self.target, batch))
        proc.start()
        child.close()
        message = None
        try:
            if parent.poll(self.timeout_s):
                try:
                    message = parent.recv()
                except EOFError:
                    message = None
        finally:
            if message is None and proc.is_alive():
                proc.kill()
            proc.join(timeout=30)
            parent.close()
        seconds = time.perf_counter() - t0
        if message is None:
            code = proc.exitcode
            if code == -signal.SIGKILL and seconds < self.timeout_s:
                return ProbeResult(batch, False, "crashed", None, "worker killed by SIGKILL (out of memory)", seconds)
            if seconds >= self.timeout_s:
                return ProbeResult(batch, False, "timeout", None, f"no answer within {self.timeout_s:g} s", seconds)
            return ProbeResult(batch, False, "failed", None, f"worker exited with code {code}", seconds)
        status, peak, detail = message
        if status == "ok":
            fits = peak <= self.cap_bytes
            return ProbeResult(batch, fits, "ok" if fits else "over_cap", peak, detail, seconds)
        return ProbeResult(batch, False, status, None, detail, seconds)


@dataclass(frozen=True)
class StepProbe:
    """Picklable description of a training step, for :func:`training_step_peak` in a worker."""

    spec: ModelSpec
    device: str = "cpu"
    forward: Callable = plain_forward
    autocast: str | None = None  # "bfloat16", "float16" or None
    cap_bytes: int = 0  # on CUDA, the allocator is limited to this many bytes
    seed: int = 0

    def __call__(self, batch: int) -> int:
        return training_step_peak(self, batch)


def training_step_peak(request: StepProbe, batch: int) -> int:
    """Total bytes a training step at ``batch`` needs: static memory, the batch, activations.

    On CUDA the allocator is first limited to ``cap_bytes`` so that a batch too large fails
    with a real out-of-memory error; on the CPU (no allocator cap) the measured peak is
    compared with the cap by the caller.
    """
    device = request.device
    if device == "cpu":
        torch.set_num_threads(1)  # memory does not depend on it; spares a shared machine's cores
    if device.startswith("cuda") and request.cap_bytes:
        dev = torch.device(device)
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, request.cap_bytes / total), dev)
    spec = dataclasses.replace(request.spec, batch=batch)
    with torch.device(device):  # built in place: the values do not matter here, only the sizes
        model = build_model(spec, request.seed).train()
    step = TrainStep(model, make_optimizer(model), forward=request.forward,
                     autocast=getattr(torch, request.autocast) if request.autocast else None)
    inputs, targets = make_batches(spec, 1, request.seed, device)[0]
    return measure_step_memory(step, inputs, targets, device).total_bytes
