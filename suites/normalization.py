"""Normalization layers: LayerNorm against RMSNorm (fused and plain), BatchNorm and GroupNorm.

Question: what does each normalization layer cost in time and memory on this device, in a
forward pass and in a forward and backward pass, what does ``torch.nn.RMSNorm`` buy over
RMSNorm written in plain PyTorch ops, and how large is each layer's error in bfloat16 and
float16 against float64?

Method: a seeded Gaussian activation of ``rows`` x ``hidden`` values (tokens by features)
with a nonzero mean per feature, shared by every variant. Each layer has seeded affine
weights (scale near 1, small shift) in the input's dtype. ``layernorm`` (Ba et al. 2016) and
the RMSNorms (Zhang & Sennrich 2019) normalize each row over ``hidden``; ``batchnorm`` (Ioffe &
Szegedy 2015, training mode: batch statistics) each feature over the rows; ``groupnorm`` (Wu
& He 2018) each row over groups of ``hidden / groups`` features. The forward+backward pass
takes ``torch.autograd.grad`` with respect to the input and the weights. Errors compare the
output and the input gradient with a float64 copy of the same layer on the same values.

In kind, what is expected: RMSNorm skips the mean, so it is cheaper than LayerNorm when both
are fused kernels, and the one-kernel ``torch.nn.RMSNorm`` beats the plain composition
(pow, mean, rsqrt, two multiplies), which reads and writes the tensor several times (the
reason fused RMSNorm kernels exist in every LLM stack). Half-precision errors are set by the
output format, since the reductions accumulate in float32.

Metrics: latency, peak memory, elements/s (FLOPs are not reported: normalization is
bandwidth-bound); ``max_error``, ``mean_error``, ``grad_max_error``, ``grad_mean_error``.
"""

from __future__ import annotations

import torch

from harness import Profile, Suite, Timing, VariantRow, variant_table
from suites.common.operators import (
    ERROR_METRICS,
    draw_inputs,
    dtype_of,
    error_metrics,
    float64_copy,
    operator_workload,
    reference_pass,
)

EPS = 1e-5


class PlainRMSNorm(torch.nn.Module):
    """RMSNorm as plain PyTorch ops: x * rsqrt(mean(x^2) + eps) * weight (float32 statistics)."""

    def __init__(self, hidden: int, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        inv = torch.rsqrt(acc.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (acc * inv).to(x.dtype) * self.weight


def build_layer(kind: str, hidden: int, groups: int) -> torch.nn.Module:
    if kind == "layernorm":
        return torch.nn.LayerNorm(hidden, eps=EPS)
    if kind == "rmsnorm":
        return torch.nn.RMSNorm(hidden, eps=EPS)
    if kind == "rmsnorm_plain":
        return PlainRMSNorm(hidden)
    if kind == "batchnorm":
        return torch.nn.BatchNorm1d(hidden, eps=EPS)
    if kind == "groupnorm":
        return torch.nn.GroupNorm(groups, hidden, eps=EPS)
    raise ValueError(f"unknown normalization {kind!r}")


def seeded_layer(kind: str, hidden: int, groups: int, seed: int = 7) -> torch.nn.Module:
    """The layer with seeded affine weights (scale 1 + 0.1 N(0,1), shift 0.1 N(0,1))."""
    layer = build_layer(kind, hidden, groups).train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            noise = 0.1 * torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + noise if name == "weight" else noise)
    return layer


class Normalization(Suite):
    """LayerNorm vs torch.nn.RMSNorm vs plain RMSNorm vs BatchNorm vs GroupNorm."""

    name = "normalization"
    description = "normalization layers: speed, memory and error against float64 in fp32/bf16/fp16"
    grid = {
        "rows": [8192],
        "hidden": [1024, 4096],
        "groups": [32],
        "dtype": ["float32", "bfloat16", "float16"],
        "pass": ["forward", "forward+backward"],
    }
    profiles = {
        "quick": Profile(
            grid={"rows": [256], "hidden": [256], "dtype": ["bfloat16"]},
            timing=Timing(warmup_s=0.01, budget_s=0.03, min_runs=5, rel_spread=0.05),
            description="2 CPU cores in seconds: 256 x 256 in bf16 (the same code as fp32), both passes",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"rows": [8192, 32768], "hidden": [1024, 4096, 8192]},
            timing=Timing(warmup_s=0.1, budget_s=1.0, min_runs=10, rel_spread=0.005),
            description="the GPU sweep: up to 32k rows of 8k features in each dtype",
        ),
    }
    reference = "layernorm"
    metrics = ERROR_METRICS
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device):
        if params["hidden"] % params["groups"]:
            raise ValueError(f"hidden={params['hidden']} is not divisible by groups={params['groups']}")
        inputs = draw_inputs((params["rows"], params["hidden"]), params["dtype"], params["pass"], device)
        # a per-feature offset, so that subtracting the mean (LayerNorm, BatchNorm) matters
        gen = torch.Generator(device=device).manual_seed(99)
        offset = torch.randn(params["hidden"], generator=gen, device=device).to(inputs.x.dtype)
        with torch.no_grad():
            inputs.x.add_(offset)
        return inputs

    @variant_table(
        VariantRow("layernorm", description="torch.nn.LayerNorm over hidden"),
        VariantRow("rmsnorm", description="torch.nn.RMSNorm over hidden"),
        VariantRow("rmsnorm_plain", description="RMSNorm written as plain PyTorch ops"),
        VariantRow("batchnorm", description="torch.nn.BatchNorm1d, batch statistics over rows"),
        VariantRow("groupnorm", description="torch.nn.GroupNorm, per row over groups of features"),
    )
    def _layer(self, state, params, kind: str):
        layer = seeded_layer(kind, params["hidden"], params["groups"])
        state.cache["reference"] = float64_copy(layer).to(state.x.device)
        layer = layer.to(device=state.x.device, dtype=dtype_of(params["dtype"]))
        return operator_workload(layer, state, params=list(layer.parameters()))

    def evaluate(self, state, params, variant, output):
        return error_metrics(output, reference_pass(state.cache["reference"], state))
