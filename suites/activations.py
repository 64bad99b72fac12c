"""Activation functions: what each costs in time and memory, and how exact it is in low precision.

Question: on this device, how much do the smooth activations of modern networks (GELU, SiLU,
Mish) cost over ReLU, in a forward pass and in a forward and backward pass, and how large is
their error in bfloat16 and float16 against float64?

Method: one seeded Gaussian tensor of ``size`` elements per grid point, shared by every
variant; each variant applies its activation (``torch.nn.functional``), timed alone
(``forward``) or with ``torch.autograd.grad`` of a seeded output gradient
(``forward+backward``). The error metrics compare the output (and the input gradient) with
the same function evaluated in float64 on the same input values.

Variants: ``relu`` (reference), ``gelu_erf`` (exact GELU, Hendrycks & Gimpel 2016),
``gelu_tanh`` (its tanh approximation), ``silu`` (SiLU/Swish, Elfwing et al. 2018; Ramachandran
et al. 2017), ``mish`` (Misra 2019), ``squared_relu`` (relu(x)^2, So et al. 2021, "Primer"),
``hardswish`` (Howard et al. 2019, "MobileNetV3").

In kind, what the literature and the libraries lead one to expect: activations are
memory-bound, so on a GPU all variants run near the same bandwidth limit and differ little
in forward latency; on the CPU the transcendental ones (erf, tanh, exp in GELU, SiLU, Mish)
cost measurably more than ReLU. In low precision the error is set by the output format
(bfloat16's 8-bit mantissa gives errors about 8x float16's), not by the function, except
where an approximation adds its own (``gelu_tanh`` against exact GELU is a different
function; here each is compared with its own float64 evaluation).

Metrics: latency, peak memory and elements/s from the engine (FLOPs are not reported: these
are elementwise and bandwidth-bound); ``max_error`` and ``mean_error`` of the output, and
``grad_max_error``, ``grad_mean_error`` of the input gradient in the forward+backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness import Profile, Suite, Timing, VariantRow, variant_table
from suites.common.operators import ERROR_METRICS, draw_inputs, error_metrics, operator_workload, reference_pass


def squared_relu(x: torch.Tensor) -> torch.Tensor:
    return torch.square(F.relu(x))


# The variants: one row each, the function the shared builder applies as the row's argument.
ROWS = (
    VariantRow("relu", F.relu, description="max(x, 0)"),
    VariantRow("gelu_erf", lambda x: F.gelu(x, approximate="none"), description="exact GELU, x * Phi(x)"),
    VariantRow("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), description="GELU's tanh approximation"),
    VariantRow("silu", F.silu, description="x * sigmoid(x)"),
    VariantRow("mish", F.mish, description="x * tanh(softplus(x))"),
    VariantRow("squared_relu", squared_relu, description="relu(x)^2 (Primer)"),
    VariantRow("hardswish", F.hardswish, description="x * relu6(x + 3) / 6"),
)
ACTIVATIONS = {row.name: row.arg for row in ROWS}


class Activations(Suite):
    """ReLU vs GELU (erf, tanh) vs SiLU vs Mish vs squared ReLU vs hardswish."""

    name = "activations"
    description = "elementwise activations: speed, memory and error against float64 in fp32/bf16/fp16"
    grid = {
        "size": [2**20, 2**24],
        "dtype": ["float32", "bfloat16", "float16"],
        "pass": ["forward", "forward+backward"],
    }
    profiles = {
        "quick": Profile(
            grid={"size": [2**16], "dtype": ["bfloat16"]},
            timing=Timing(warmup_s=0.01, budget_s=0.03, min_runs=5, rel_spread=0.05),
            description="2 CPU cores in seconds: 64k elements in bf16 (the same code as fp32), both passes",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"size": [2**20, 2**24, 2**28]},
            timing=Timing(warmup_s=0.1, budget_s=1.0, min_runs=10, rel_spread=0.005),
            description="the GPU sweep: up to 2^28 elements in each dtype",
        ),
    }
    reference = "relu"
    metrics = ERROR_METRICS
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device):
        return draw_inputs((params["size"],), params["dtype"], params["pass"], device)

    @variant_table(*ROWS)
    def _activation(self, state, params, fn):
        return operator_workload(fn, state)

    def evaluate(self, state, params, variant, output):
        return error_metrics(output, reference_pass(ACTIVATIONS[variant], state))
