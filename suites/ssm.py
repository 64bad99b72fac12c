"""Selective state-space models against attention: speed, memory, exactness and selectivity.

Question: at what sequence length does a linear-time state-space layer beat causal attention
on this device, what does each cost in memory, and what does selectivity buy in quality?

Method: every variant is one sequence-mixing layer (batch, seq_len, d_model) -> same shape,
with an input and an output projection, seeded weights and a seeded input shared by all
variants at a grid point; timed as a forward pass or as a forward and backward pass
(``torch.autograd.grad`` with respect to the input and every weight).

Variants
- ``attention`` (reference): causal multi-head attention through SDPA (head_dim 64).
- ``s4d_fft``, ``s4d_recurrent``: S4D-Real (Gu et al. 2022, "On the parameterization and
  initialization of diagonal state space models"): a time-invariant diagonal SSM per channel,
  computed as a causal convolution with its kernel through the FFT, or as the recurrence.
- ``mamba_sequential``, ``mamba_parallel``, ``mamba_chunked``: the selective SSM S6 of Mamba
  (Gu & Dao 2023) without the gating branch and the short convolution: delta, B and C are
  projections of the input. Computed by a sequential loop, a work-efficient parallel
  associative scan (all states materialised), and a chunked scan (chunks in lockstep, then
  the state carried across chunk boundaries); see :mod:`suites.common.ssm_layers`.
- ``mamba_fused``: the same layer with ``mamba_ssm``'s CUDA selective-scan kernel (needs CUDA
  and the ``mamba_ssm`` package; skipped with the reason elsewhere).

Metrics, besides latency, peak memory and tokens/s (TFLOP/s is not reported: the scans are
elementwise and bound by memory traffic and kernel launches, not by arithmetic):
- ``rel_error``: relative Frobenius error of the forward output against the same layer in
  float64 on the same inputs and weights, computed by the sequential recurrence (the
  definition) for the SSMs and by explicit softmax attention (in query blocks) for attention.
- ``copy_accuracy``: the selective copying task of the Mamba paper (section 3.1), scaled to a
  CPU (:class:`suites.common.ssm_layers.CopyTask`): a 2-layer model built on the variant's
  layer kind is trained once per process for ``copy_steps`` AdamW steps (seeded, on the CPU;
  S4D through its FFT form, Mamba through the chunked scan), then scored with the variant's own
  computation, so the forms of one layer must score alike. ``copy_steps`` 0 skips the task.

The finding to reproduce in kind (Gu & Dao 2023, Table 1, selective copying without gating):
the time-invariant S4 layer reaches 18.3% accuracy, the selective S6 layer 97.0%: a
time-invariant convolution cannot skip the noise tokens between the ones it must remember,
a selective one can. Attention solves the task with positions (it is given learned position
embeddings, as it has no notion of order otherwise). For speed, attention's cost grows with
seq_len squared and the scans' linearly, so past some length the scans win; on the CPU the
sequential forms pay a Python-level step per token, which moves that length far out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch

from harness import Band, Metric, Profile, Skip, Suite, Timing, Workload, variant
from harness.metrics.numeric import relative_error
from suites.common.operators import dtype_of
from suites.common.ssm_layers import CopyTask, build_layer, copy_accuracy, trained_copy_model

# The task of the quick and default profiles; ``copy_steps`` sets the training budget.
COPY_TASK = CopyTask()
LAYER_SEEDS = {"attention": 11, "s4d": 12, "mamba": 13}
_ACCURACY: dict[tuple, float] = {}


@dataclass
class SequenceInputs:
    x: torch.Tensor
    grad_out: torch.Tensor | None
    cache: dict = field(default_factory=dict)


class SSM(Suite):
    """Causal attention vs S4D (FFT, recurrent) vs Mamba's selective SSM (sequential, parallel, chunked, fused)."""

    name = "ssm"
    description = "state-space layers (S4D, Mamba's S6) against causal attention over sequence length"
    grid = {
        "batch": [1],
        "d_model": [256],
        "d_state": [16],
        "seq_len": [256, 512, 1024, 2048, 4096],
        "dtype": ["float32"],
        "pass": ["forward", "forward+backward"],
        "copy_steps": [800],
    }
    profiles = {
        "quick": Profile(
            grid={"d_model": [64], "seq_len": [64], "copy_steps": [10]},
            timing=Timing(warmup_s=0.01, budget_s=0.05, min_runs=3, rel_spread=0.05),
            description="2 CPU cores in seconds: one short sequence, both passes, a 10-step task training",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={
                "batch": [4],
                "d_model": [1024],
                "seq_len": [1024, 2048, 4096, 8192, 16384, 32768, 65536],
                "dtype": ["float32", "bfloat16"],
            },
            timing=Timing(warmup_s=0.1, budget_s=1.0, min_runs=5, rel_spread=0.01),
            description="the GPU sweep: seq_len 1k to 64k (OOM records where memory ends)",
        ),
    }
    reference = "attention"
    # the scan/FFT forms compute the same recurrence as the sequential reference
    bands = [Band("rel_error", max=1e-4, variants=("mamba_parallel", "mamba_chunked", "s4d_fft"))]
    metrics = [
        Metric("rel_error", "", "lower", "relative Frobenius error of the output against the float64 sequential reference",
               ratio=False, kind="quality"),
        Metric("copy_accuracy", "%", "higher",
               "selective copying accuracy of a 2-layer model of this layer after copy_steps training steps",
               ratio=False, kind="quality"),
    ]
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=3, rel_spread=0.02)

    def prepare(self, params, device) -> SequenceInputs:
        dtype = dtype_of(params["dtype"])
        gen = torch.Generator(device=device).manual_seed(1234)
        shape = (params["batch"], params["seq_len"], params["d_model"])
        backward = params["pass"] == "forward+backward"
        x = torch.randn(shape, generator=gen, device=device).to(dtype).requires_grad_(backward)
        grad_out = torch.randn(shape, generator=gen, device=device).to(dtype) if backward else None
        return SequenceInputs(x, grad_out)

    # ---------------------------------------------------------------- building cases
    def _layer(self, kind: str, params, device) -> torch.nn.Module:
        torch.manual_seed(LAYER_SEEDS[kind])  # every form of a kind gets the same weights
        layer = build_layer(kind, params["d_model"], params["d_state"])
        return layer.to(device=device, dtype=dtype_of(params["dtype"]))

    def _workload(self, state: SequenceInputs, params, kind: str, impl: str) -> Workload:
        x = state.x
        layer = self._layer(kind, params, x.device)
        state.cache["current"] = (kind, impl, layer)
        items = params["batch"] * params["seq_len"]

        def forward():
            with torch.no_grad():
                return layer(x, impl)

        if state.grad_out is None:
            return Workload(forward, flops=0, items=items, items_unit="tokens/s")
        wrt = [x, *layer.parameters()]

        def forward_backward():
            return torch.autograd.grad(layer(x, impl), wrt, state.grad_out)

        return Workload(forward_backward, flops=0, items=items, items_unit="tokens/s", output=forward)

    # ---------------------------------------------------------------- variants
    @variant()
    def attention(self, state, params):
        """causal multi-head SDPA attention with projections"""
        return self._workload(state, params, "attention", "sdpa")

    @variant()
    def s4d_fft(self, state, params):
        """S4D-Real as a causal FFT convolution with its kernel"""
        return self._workload(state, params, "s4d", "fft")

    @variant()
    def s4d_recurrent(self, state, params):
        """S4D-Real as a sequential recurrence"""
        return self._workload(state, params, "s4d", "sequential")

    @variant()
    def mamba_sequential(self, state, params):
        """selective SSM (S6), sequential scan"""
        return self._workload(state, params, "mamba", "sequential")

    @variant()
    def mamba_parallel(self, state, params):
        """selective SSM (S6), parallel associative scan"""
        return self._workload(state, params, "mamba", "parallel")

    @variant()
    def mamba_chunked(self, state, params):
        """selective SSM (S6), chunked scan"""
        return self._workload(state, params, "mamba", "chunked")

    @variant(requires=("cuda",), packages=("mamba_ssm",))
    def mamba_fused(self, state, params):
        """selective SSM (S6), mamba_ssm's fused CUDA kernel"""
        if params["dtype"] not in ("float32", "float16", "bfloat16"):
            raise Skip(f"mamba_ssm's kernel does not take {params['dtype']}")
        return self._workload(state, params, "mamba", "fused")

    # ---------------------------------------------------------------- quality
    def evaluate(self, state: SequenceInputs, params, variant, output):
        kind, impl, layer = state.cache["current"]
        if kind not in state.cache:
            ref_layer = copy.deepcopy(layer).to(torch.float64)
            with torch.no_grad():
                state.cache[kind] = ref_layer(state.x.detach().to(torch.float64), "blocked" if kind == "attention" else "sequential")
        out = {"rel_error": relative_error(output, state.cache[kind])}
        if params["copy_steps"] > 0:
            out["copy_accuracy"] = task_accuracy(kind, impl, replace(COPY_TASK, steps=params["copy_steps"]),
                                                 str(state.x.device))
        return out


def task_accuracy(kind: str, impl: str, task: CopyTask, device: str) -> float:
    """Selective copying accuracy (%) of the model of ``kind`` scored with ``impl``; once per process."""
    key = (kind, impl, task, device)
    if key not in _ACCURACY:
        model = trained_copy_model(kind, task)
        if device != "cpu":
            model = copy.deepcopy(model)
        _ACCURACY[key] = 100.0 * copy_accuracy(model, task, impl, device)
    return _ACCURACY[key]

