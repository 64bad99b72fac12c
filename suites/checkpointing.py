"""Activation checkpointing: what recomputation buys in memory and costs in step time.

Question: for a transformer stack of depth L, how much activation memory does each
checkpointing scheme save, how much longer is a training step, and how much larger a batch fits
under a memory cap?

Variants (one training step: forward, loss, backward, AdamW step)
- ``none``: every activation kept for the backward pass.
- ``full``: every block under ``torch.utils.checkpoint`` (``use_reentrant=False``): only block
  inputs are kept and each block is recomputed in the backward pass, about one extra forward
  (Chen et al. 2016: about +30% step time) for activation memory near one block's plus L
  block inputs.
- ``sqrt``: ``checkpoint_sequential`` with round(sqrt(L)) segments (Chen et al.'s sqrt(n)
  scheme): segment inputs kept, one segment's activations live at a time, so activation memory
  grows like sqrt(L) rather than L. The last segment runs without checkpointing, as it is
  needed first in the backward pass.
- ``selective``: each block under checkpoint with PyTorch's selective activation checkpointing
  (``create_selective_checkpoint_contexts``): the outputs of matmuls and attention kernels are
  saved, pointwise ops (norms, GELU, residual adds) recomputed; saves less than ``full`` but
  recomputes no matmul.
- ``offload``: ``torch.autograd.graph.save_on_cpu``: saved activations are moved to host
  memory (pinned on CUDA) during the forward and copied back for the backward: device memory
  of ``none``'s minus the activations, traded for PCIe transfers. On the CPU the activations
  already live in host memory: the hooks keep them where they are, so memory equals
  ``none``'s and the variant measures only the hooks' overhead.

Metrics, besides the engine's latency (its ratio to ``none`` is the recomputation overhead),
peak memory, TFLOP/s and samples/s: for the GPT stack TFLOP/s is the model's FLOPs by formula
(causal attention halved, recomputation not included: useful work per second); for ViT the
FLOPs FlopCounterMode counts in the step, recomputation included (``info["flops_method"]``
says which). The suite's own metrics:
- ``activation_memory``: the step's peak minus parameters, gradients, optimizer state and the
  batch (gradient buffers persist between steps, so they are not part of the peak).
- ``total_memory``: parameters + gradients + AdamW state + batch + activation peak.
- ``recompute_flops``: FLOPs of a forward+backward counted by FlopCounterMode, as a ratio to
  ``none``'s (1.33 is one extra forward when backward costs two forwards).
- ``grad_error``: the largest relative L2 difference of any parameter's gradient from
  ``none``'s on the same weights and batch; recomputation must reproduce the gradients.
- ``max_batch``: the largest batch whose step fits under ``mem_cap_mib``, found by doubling
  then bisection, each probe in a fresh worker process (:mod:`suites.common.training`). On CUDA
  the allocator is capped and an out-of-memory error means "does not fit"; on the CPU, which
  has no allocator cap, the measured total (profiler) is compared with the cap. ``mem_cap_mib``
  0 skips the search.

Model: the GPT-style decoder of :mod:`suites.common.models` (``model="gpt"``), or torchvision's
ViT with the same depth, width and heads (``model="vit"``, ``input_size`` is then the image
side, 16-pixel patches). The ``autocast`` param runs the step under bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    checkpoint_sequential,
    create_selective_checkpoint_contexts,
)

from harness import Band, Metric, Profile, Suite, Timing, Workload, variant
from harness.measure import count_flops
from suites.common.models import ModelSpec, as_stack, build_model, loss_fn, make_batches
from suites.common.training import (
    MIB,
    IsolatedProbe,
    ProbeUnavailable,
    StepMemory,
    StepProbe,
    TrainStep,
    clone_model,
    largest_batch,
    make_optimizer,
    measure_step_memory,
    training_step_flops,
)


# --------------------------------------------------------------------------- forward passes
def _run(model, inputs, run_blocks):
    stack = as_stack(model)
    return stack.head(run_blocks(stack.blocks, stack.stem(inputs)))


def _sequential(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def forward_none(model, inputs):
    """All blocks in order, every activation saved."""
    return _run(model, inputs, _sequential)


def forward_full(model, inputs):
    """Each block checkpointed: block inputs saved, blocks recomputed in backward."""

    def run(blocks, x):
        for block in blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x

    return _run(model, inputs, run)


def sqrt_segments(depth: int) -> int:
    """round(sqrt(L)) segments, at least one."""
    return max(1, round(math.sqrt(depth)))


def forward_sqrt(model, inputs):
    """round(sqrt(L)) checkpointed segments (the last one runs plainly)."""

    def run(blocks, x):
        return checkpoint_sequential(blocks, sqrt_segments(len(blocks)), x, use_reentrant=False)

    return _run(model, inputs, run)


def _matmul_ops() -> frozenset:
    aten = torch.ops.aten
    names = ("mm", "addmm", "bmm", "baddbmm", "convolution", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math")
    return frozenset(getattr(aten, n).default for n in names if hasattr(aten, n))


_SAVED_OPS: frozenset | None = None


def save_matmuls_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing policy: keep matmul and attention outputs, recompute the rest."""
    global _SAVED_OPS
    if _SAVED_OPS is None:
        _SAVED_OPS = _matmul_ops()
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def forward_selective(model, inputs):
    """Each block checkpointed with a policy that saves matmuls and recomputes pointwise ops."""
    context_fn = functools.partial(create_selective_checkpoint_contexts, save_matmuls_policy)

    def run(blocks, x):
        for block in blocks:
            x = checkpoint(block, x, use_reentrant=False, context_fn=context_fn)
        return x

    return _run(model, inputs, run)


def forward_offload(model, inputs):
    """Saved activations moved to host memory for the backward pass (pinned on CUDA)."""
    with torch.autograd.graph.save_on_cpu(pin_memory=inputs.is_cuda):
        return forward_none(model, inputs)


FORWARDS = {
    "none": forward_none,
    "full": forward_full,
    "sqrt": forward_sqrt,
    "selective": forward_selective,
    "offload": forward_offload,
}
AUTOCAST = {"off": None, "bf16": "bfloat16"}
MAX_BATCH_LIMIT = 4096  # the largest-batch search stops (incomplete) when this still fits


# --------------------------------------------------------------------------- helpers
def gradients(model, forward, inputs, targets, autocast: str | None) -> dict[str, torch.Tensor]:
    """Parameter gradients of the loss on one batch (no optimizer step)."""
    model.zero_grad(set_to_none=True)
    cast = torch.autocast(targets.device.type, dtype=getattr(torch, autocast)) if autocast else contextlib.nullcontext()
    with cast:
        loss = loss_fn(forward(model, inputs), targets)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def max_relative_difference(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """max over parameters of ||g - g_ref|| / ||g_ref|| (float64)."""
    if grads.keys() != ref.keys():
        raise ValueError("the two runs produced gradients for different parameters")
    worst = 0.0
    for name, g_ref in ref.items():
        g_ref64 = g_ref.double()
        diff = float((grads[name].double() - g_ref64).norm())
        worst = max(worst, diff / max(float(g_ref64.norm()), 1e-30))
    return worst


class CheckpointState:
    """Seeded model and batch at one grid point, and the ``none`` results others compare to."""

    def __init__(self, spec: ModelSpec, device: str, autocast: str | None):
        self.spec = spec
        self.device = device
        self.autocast = autocast
        self.model = build_model(spec, seed=0).to(device).train()
        self.inputs, self.targets = make_batches(spec, 1, seed=0, device=device)[0]
        self.cache: dict = {}

    def reference(self, key: str, compute):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def grads(self, forward):
        return gradients(clone_model(self.model, self.device), forward, self.inputs, self.targets, self.autocast)

    def backward_flops(self, forward) -> int:
        model = clone_model(self.model, self.device)
        return count_flops(lambda: gradients(model, forward, self.inputs, self.targets, self.autocast))[0]


# --------------------------------------------------------------------------- the suite
class Checkpointing(Suite):
    """none vs full vs sqrt(L) vs selective activation checkpointing vs CPU offload."""

    name = "checkpointing"
    description = "activation checkpointing schemes: step time, activation memory, largest batch under a cap"
    grid = {
        "model": ["gpt"],
        "depth": [4, 8, 16, 32],
        "width": [256],
        "heads": [4],
        "input_size": [256],
        "vocab": [1024],
        "batch": [8],
        "autocast": ["off"],
        "mem_cap_mib": [512],
    }
    profiles = {
        "quick": Profile(
            grid={"depth": [4, 16], "width": [64], "heads": [2], "input_size": [128], "vocab": [256],
                  "batch": [4], "mem_cap_mib": [48]},
            timing=Timing(warmup_s=0.02, budget_s=0.25, min_runs=5, rel_spread=0.02),
            description="2 CPU cores in about a minute: a narrow GPT stack at depth 4 and 16",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"depth": [6, 12, 24, 48], "width": [1024], "heads": [16], "input_size": [1024],
                  "vocab": [50304], "batch": [8], "autocast": ["bf16"], "mem_cap_mib": [24576]},
            timing=Timing(warmup_s=0.2, budget_s=2.0, min_runs=10, rel_spread=0.005),
            description="H100: GPT-2-medium-wide stacks, 1k tokens, bf16 autocast, largest batch under 24 GiB",
        ),
    }
    reference = "none"
    # recomputation must give the gradients of the plain step
    bands = [Band("grad_error", max=1e-5)]
    metrics = [
        Metric("activation_memory", "MiB", "lower", "step peak minus parameters, gradients, optimizer state and batch", kind="memory"),
        Metric("total_memory", "MiB", "lower", "parameters + gradients + optimizer state + batch + activation peak", kind="memory"),
        Metric("recompute_flops", "x", "lower", "counted forward+backward FLOPs relative to none's", ratio=False),
        Metric("grad_error", "", "lower", "largest relative L2 gradient difference from none's", ratio=False),
        Metric("max_batch", "samples", "higher", "largest batch under mem_cap_mib (isolated probes)", kind="count"),
    ]
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device) -> CheckpointState:
        arch = params["model"]
        classes = params["vocab"] if arch == "gpt" else 1000
        spec = ModelSpec(arch=arch, batch=params["batch"], input_size=params["input_size"], depth=params["depth"],
                         width=params["width"], heads=params["heads"], classes=classes, patch=16)
        return CheckpointState(spec, device, AUTOCAST[params["autocast"]])

    def _workload(self, state: CheckpointState, params, name: str) -> Workload:
        forward = FORWARDS[name]
        model = clone_model(state.model, state.device)
        autocast = getattr(torch, state.autocast) if state.autocast else None
        step = TrainStep(model, make_optimizer(model), forward=forward, autocast=autocast)
        inputs, targets = state.inputs, state.targets

        def output():
            memory = measure_step_memory(step, inputs, targets, state.device)
            grads_ref = state.reference("grads", lambda: state.grads(forward_none))
            flops_ref = state.reference("flops", lambda: state.backward_flops(forward_none))
            return {
                "memory": memory,
                "grad_error": max_relative_difference(state.grads(forward), grads_ref),
                "recompute_flops": state.backward_flops(forward) / flops_ref,
            }

        info = {"segments": sqrt_segments(params["depth"])} if name == "sqrt" else {}
        if name == "offload" and not state.device.startswith("cuda"):
            info["note"] = "on the CPU saved activations already live in host memory: nothing moves"
        # Counted (ViT) here rather than by the engine, whose FLOP counter would wrap the step
        # it measures peak memory on.
        flops, info["flops_method"] = training_step_flops(
            state.spec, lambda: count_flops(lambda: step(inputs, targets))[0])
        return Workload(lambda: step(inputs, targets), flops=flops, items=params["batch"],
                        items_unit="samples/s", output=output, info=info)

    @variant()
    def none(self, state, params):
        """no checkpointing: every activation kept"""
        return self._workload(state, params, "none")

    @variant()
    def full(self, state, params):
        """every block recomputed in backward (use_reentrant=False)"""
        return self._workload(state, params, "full")

    @variant()
    def sqrt(self, state, params):
        """round(sqrt(L)) checkpointed segments"""
        return self._workload(state, params, "sqrt")

    @variant()
    def selective(self, state, params):
        """selective checkpointing: save matmuls, recompute pointwise ops"""
        return self._workload(state, params, "selective")

    @variant()
    def offload(self, state, params):
        """saved activations kept in host memory (save_on_cpu)"""
        return self._workload(state, params, "offload")

    # ---------------------------------------------------------------- quality
    def evaluate(self, state: CheckpointState, params, variant, output):
        memory = output["memory"]
        metrics = {
            "activation_memory": {"value": memory.activation_bytes / MIB, "bytes": memory.activation_bytes},
            "total_memory": memory.total_metric(),
            "grad_error": output["grad_error"],
            "recompute_flops": output["recompute_flops"],
        }
        if params["mem_cap_mib"] > 0:
            metrics["max_batch"] = self._max_batch(state, params, variant, memory)
        return metrics

    def _max_batch(self, state: CheckpointState, params, variant, memory: StepMemory) -> dict:
        """Search in isolated workers, starting from a linear extrapolation of this step's memory."""
        cap = int(params["mem_cap_mib"] * MIB)
        per_sample = (memory.activation_bytes + memory.batch_bytes) / params["batch"]
        guess = int((cap - memory.static_bytes) // max(per_sample, 1.0))
        start = min(max(guess, 1), MAX_BATCH_LIMIT)
        target = StepProbe(state.spec, state.device, FORWARDS[variant], state.autocast, cap)
        if state.device.startswith("cuda"):
            torch.cuda.empty_cache()  # leave the device to the probes
        try:
            result = largest_batch(IsolatedProbe(target, cap), start=start, limit=MAX_BATCH_LIMIT, max_probes=24)
        except ProbeUnavailable as exc:
            return {"value": math.nan, "note": str(exc)}
        value = result.largest if result.complete or result.largest else math.nan
        return {"value": value, "cap_mib": params["mem_cap_mib"], "guess": guess, **result.summary()}
