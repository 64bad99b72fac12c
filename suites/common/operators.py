"""Helpers of the operator suites (activations, normalization, upsampling, deformable_conv).

An operator case is one module or function applied to one seeded input, timed as a forward
pass or as a forward and backward pass, and compared with the same operator evaluated in
float64 on the same input and weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from harness import Metric, Workload

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
PASSES = ("forward", "forward+backward")

# Error metrics shared by the operator suites: the forward output, and (forward+backward
# only) the gradient with respect to the input, each against float64 on the same values.
ERROR_METRICS = [
    Metric("max_error", "", "lower", "largest absolute error of the output against float64", ratio=False, kind="quality"),
    Metric("mean_error", "", "lower", "mean absolute error of the output against float64", ratio=False, kind="quality"),
    Metric("grad_max_error", "", "lower",
           "largest absolute error of the input gradient against float64 (forward+backward only)", ratio=False, kind="quality"),
    Metric("grad_mean_error", "", "lower",
           "mean absolute error of the input gradient against float64 (forward+backward only)", ratio=False, kind="quality"),
]


def dtype_of(name: str) -> torch.dtype:
    return DTYPES[name]


@dataclass
class OperatorInputs:
    """One grid point's input and output gradient, drawn once and shared by every variant."""

    x: torch.Tensor  # in the case's dtype, requires_grad for forward+backward
    grad_out: torch.Tensor | None
    backward: bool
    cache: dict = field(default_factory=dict)


def draw_inputs(shape: Sequence[int], dtype_name: str, passes: str, device: str, seed: int = 1234,
                out_shape: Sequence[int] | None = None, scale: float = 1.0) -> OperatorInputs:
    """Seeded Gaussian input (and output gradient of ``out_shape`` for a backward pass)."""
    if passes not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, not {passes!r}")
    gen = torch.Generator(device=device).manual_seed(seed)
    dtype = dtype_of(dtype_name)
    backward = passes == "forward+backward"
    x = (scale * torch.randn(tuple(shape), generator=gen, device=device)).to(dtype).requires_grad_(backward)
    grad_out = None
    if backward:
        grad_out = torch.randn(tuple(out_shape or shape), generator=gen, device=device).to(dtype)
    return OperatorInputs(x, grad_out, backward)


def operator_workload(op: Callable[[torch.Tensor], torch.Tensor], inputs: OperatorInputs,
                      params: Sequence[torch.Tensor] = (), flops: float | None = 0,
                      items: float | None = None, items_unit: str = "elements/s") -> Workload:
    """Time ``op(x)``; with a backward pass, ``torch.autograd.grad`` of the output.

    The gradients are returned fresh from each call (nothing accumulates in ``.grad``). The
    output handed to quality metrics is ``(y, grad_x)`` (``grad_x`` None for a forward pass).
    """
    x = inputs.x
    if not inputs.backward:

        def fn():
            with torch.no_grad():
                return op(x), None

        return Workload(fn, flops=flops, items=items if items is not None else x.numel(), items_unit=items_unit)

    wrt = [x, *[p for p in params if p.requires_grad]]

    def fn_backward():
        y = op(x)
        grads = torch.autograd.grad(y, wrt, inputs.grad_out)
        return y.detach(), grads[0]

    return Workload(fn_backward, flops=flops, items=items if items is not None else x.numel(),
                    items_unit=items_unit)


def reference_pass(op64: Callable[[torch.Tensor], torch.Tensor], inputs: OperatorInputs):
    """The float64 output (and input gradient) of ``op64`` on the same input values."""
    x64 = inputs.x.detach().to(torch.float64).requires_grad_(inputs.backward)
    if not inputs.backward:
        with torch.no_grad():
            return op64(x64), None
    y = op64(x64)
    (g,) = torch.autograd.grad(y, [x64], inputs.grad_out.to(torch.float64))
    return y.detach(), g


def error_metrics(output, reference) -> dict[str, float]:
    """Max and mean absolute error of the output (and input gradient) against the reference."""
    y, g = output
    y_ref, g_ref = reference
    out = _abs_errors(y, y_ref, "")
    if g is not None and g_ref is not None:
        out.update(_abs_errors(g, g_ref, "grad_"))
    return out


def _abs_errors(t: torch.Tensor, ref: torch.Tensor, prefix: str) -> dict[str, float]:
    diff = (t.detach().to(torch.float64) - ref.detach().to(device=t.device, dtype=torch.float64)).abs()
    return {f"{prefix}max_error": float(diff.max()), f"{prefix}mean_error": float(diff.mean())}


def float64_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``module`` (same weights and buffers), for the reference pass."""
    import copy

    return copy.deepcopy(module).to(torch.float64)
