"""Training precision: what FP32, TF32, FP16 and BF16 buy in speed and memory, and cost in accuracy.

Question: for one training step of a real architecture, how much faster and leaner is each
precision than FP32 on this device, how far does its forward pass land from a float64 run of
the same weights and batch, and does training in it end near where FP32 training does?

Variants (one step: forward, loss, backward, AdamW step)
- ``fp32``: float32 throughout, TF32 off for matmuls and cuDNN convolutions.
- ``tf32``: float32 weights with TF32 matmuls and convolutions (CUDA, compute capability 8.0+).
- ``fp16_amp``: ``torch.autocast`` to float16 plus ``torch.amp.GradScaler`` (dynamic loss
  scaling). On a CPU without native float16 matmul (AMX-FP16 or AVX512-FP16) it is skipped:
  the fallback kernels run tens of times slower than float32, so a timing would measure them.
- ``bf16_amp``: ``torch.autocast`` to bfloat16; no scaler (bfloat16 has float32's range).
- ``fp16`` / ``bf16``: the whole model, its gradients and AdamW state in half precision
  ("pure" half training, CUDA only). AdamW's eps is 1e-4 for float16 weights, since 1e-8 is 0
  in float16 and would turn zero gradients into NaN updates.

Metrics, besides the engine's latency, peak memory (above params, grads and optimizer state,
which persist between steps), TFLOP/s and samples/s:
- ``fwd_rel_error``: relative Frobenius error of the model output (logits) in the variant's
  precision against float64, on the same initial weights and (the first 8 samples of the)
  batch, in eval mode: batch norm
  then uses its running statistics, so the number measures the arithmetic rather than how a
  freshly initialised network amplifies rounding through the statistics of a tiny batch
  (train mode gives ResNet-50 about 0.3 in bfloat16 at batch 4, eval mode about 0.02).
- ``loss_after_k``: the loss after ``k_steps`` training steps from the same initial weights on
  the same batches (cycling over 4), evaluated in float32 on a held-out batch of the same
  synthetic task; the table's ratio is to FP32's. The training-loss curve is stored with it.
- ``loss_deviation``: |loss_after_k - FP32's| / FP32's.
- ``scaler_skipped_steps``: of the ``k_steps``, how many the gradient scaler skipped because
  gradients overflowed (scaler variants only).
- ``total_memory``: parameters + gradients + optimizer state + batch + the step's peak above
  them: what the step needs in all.

FLOPs are counted once per grid point and shared by all variants, so TFLOP/s compares
precisions on the same work: GPT models by formula (causal attention halved), the others by
FlopCounterMode over a float32 step; ``info["flops_method"]`` says which.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch

from harness import Band, Metric, Profile, Skip, Suite, Timing, VariantRow, Workload, variant_table
from harness.measure import count_flops
from harness.metrics.numeric import relative_error
from suites.common.models import build_model, loss_fn, make_batches, preset_spec
from suites.common.training import TrainStep, clone_model, make_optimizer, measure_step_memory, training_step_flops

LOSS_BATCHES = 4  # distinct batches the K-step runs cycle over
ERROR_SAMPLES = 8  # samples of the first batch the forward error is computed on (bounds float64 memory)


@dataclass(frozen=True)
class PrecisionMode:
    """How a variant computes: autocast dtype, weight dtype, loss scaling, TF32."""

    autocast: torch.dtype | None = None
    weights: torch.dtype = torch.float32
    scaler: bool = False
    tf32: bool = False


PRECISIONS = {
    "fp32": PrecisionMode(),
    "tf32": PrecisionMode(tf32=True),
    "fp16_amp": PrecisionMode(autocast=torch.float16, scaler=True),
    "bf16_amp": PrecisionMode(autocast=torch.bfloat16),
    "fp16": PrecisionMode(weights=torch.float16),
    "bf16": PrecisionMode(weights=torch.bfloat16),
}


@contextlib.contextmanager
def fp32_math(device: str, tf32: bool):
    """TF32 on or off for CUDA matmuls and cuDNN convolutions, restored afterwards.

    torch >= 2.9 names it ``fp32_precision``; older torch has the ``allow_tf32`` flags.
    """
    if not device.startswith("cuda"):
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        targets, names, value = (matmul, conv), "fp32_precision", "tf32" if tf32 else "ieee"
        saved = (matmul.fp32_precision, conv.fp32_precision)
    else:
        targets, names, value = (matmul, cudnn), "allow_tf32", tf32
        saved = (matmul.allow_tf32, cudnn.allow_tf32)
    for target in targets:
        setattr(target, names, value)
    try:
        yield
    finally:
        for target, old in zip(targets, saved):
            setattr(target, names, old)


def peak_dtype(prec: PrecisionMode) -> str:
    """The matmul peak a precision is compared with (see ``harness doctor``)."""
    low = prec.autocast or (prec.weights if prec.weights != torch.float32 else None)
    if low is not None:
        return str(low).replace("torch.", "")
    return "tf32" if prec.tf32 else "float32"


def cpu_has_fast_fp16() -> bool:
    """Whether this CPU has native float16 matmul (AMX-FP16 or AVX512-FP16)."""
    checks = ("_is_amx_fp16_supported", "_is_avx512_fp16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class PrecisionState:
    """Seeded model and batches at one grid point, and the references variants compare to."""

    def __init__(self, spec, device: str, k_steps: int):
        self.spec = spec
        self.device = device
        self.k_steps = k_steps
        self.model = build_model(spec, seed=0).to(device).train()
        *self.batches, self.heldout = make_batches(spec, LOSS_BATCHES + 1, seed=0, device=device)
        self.cache: dict = {}

    def reference(self, key: str, compute):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def batch(self, index: int, prec: PrecisionMode):
        inputs, targets = self.batches[index % len(self.batches)]
        if inputs.is_floating_point():
            inputs = inputs.to(prec.weights)
        return inputs, targets

    def trainer(self, prec: PrecisionMode) -> TrainStep:
        model = clone_model(self.model, self.device, prec.weights)
        eps = 1e-4 if prec.weights == torch.float16 else 1e-8
        scaler = torch.amp.GradScaler(self.device.split(":")[0]) if prec.scaler else None
        return TrainStep(model, make_optimizer(model, eps=eps), autocast=prec.autocast, scaler=scaler,
                         context=functools.partial(fp32_math, self.device, prec.tf32))

    def forward_output(self, prec: PrecisionMode) -> torch.Tensor:
        """Output of the initial model on the first batch, in ``prec`` (eval mode)."""
        model = clone_model(self.model, self.device, prec.weights).eval()
        inputs = self.batch(0, prec)[0][:ERROR_SAMPLES]
        cast = (torch.autocast(self.device.split(":")[0], dtype=prec.autocast) if prec.autocast
                else contextlib.nullcontext())
        with torch.no_grad(), fp32_math(self.device, prec.tf32), cast:
            return model(inputs)

    def float64_output(self) -> torch.Tensor:
        model = clone_model(self.model, self.device, torch.float64).eval()
        inputs = self.batches[0][0][:ERROR_SAMPLES]
        with torch.no_grad():
            return model(inputs.double() if inputs.is_floating_point() else inputs)

    def train_k_steps(self, prec: PrecisionMode) -> dict:
        """K steps from the initial weights, then the loss on a held-out batch in float32."""
        step = self.trainer(prec)
        curve = [float(step(*self.batch(i, prec), count_skips=True)) for i in range(self.k_steps)]
        model = step.model.float()
        inputs, targets = self.heldout
        with torch.no_grad(), fp32_math(self.device, False):
            final = float(loss_fn(model(inputs), targets))
        return {"loss": final, "curve": curve, "skipped": step.skipped_steps}


class Precision(Suite):
    """fp32 vs tf32 vs fp16/bf16 autocast vs fp16/bf16 weights, one training step."""

    name = "precision"
    description = "training-step precision: FP32, TF32, FP16/BF16 autocast and half weights"
    grid = {
        "model": ["vit_tiny", "gpt_tiny", "resnet50_64px", "efficientnet_b0_64px",
                  "vit_b_16", "resnet50", "efficientnet_b0", "gpt2_small"],
        "batch": [8],
        "k_steps": [20],
    }
    profiles = {
        "quick": Profile(
            grid={"model": ["vit_tiny", "gpt_tiny", "resnet50_64px"], "batch": [4], "k_steps": [8]},
            timing=Timing(warmup_s=0.02, budget_s=0.25, min_runs=5, rel_spread=0.02),
            description="2 CPU cores in about a minute: a small ViT, a small GPT and ResNet-50 at 64 px",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"model": ["vit_b_16", "resnet50", "efficientnet_b0", "gpt2_small"], "batch": [32],
                  "k_steps": [50]},
            timing=Timing(warmup_s=0.2, budget_s=2.0, min_runs=10, rel_spread=0.005),
            description="H100: ViT-B/16, ResNet-50 and EfficientNet-B0 at 224 px, GPT-2 small at 1k tokens",
        ),
    }
    reference = "fp32"
    # a lower precision must train to a held-out loss within 2% of float32's
    bands = [Band("loss_deviation", max=0.02)]
    metrics = [
        Metric("fwd_rel_error", "", "lower", "relative error of the forward output against float64", ratio=False),
        Metric("loss_after_k", "", "lower", "held-out loss after k_steps training steps (float32 evaluation)"),
        Metric("loss_deviation", "", "lower", "|loss_after_k - fp32's| / fp32's", ratio=False),
        Metric("scaler_skipped_steps", "steps", "lower", "steps the gradient scaler skipped (overflow)", ratio=False, kind="count"),
        Metric("total_memory", "MiB", "lower", "params + grads + optimizer state + batch + step peak", kind="memory"),
    ]
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device) -> PrecisionState:
        spec = preset_spec(params["model"], params["batch"])
        return PrecisionState(spec, device, params["k_steps"])

    @variant_table(
        VariantRow("fp32", description="float32, TF32 off"),
        VariantRow("tf32", requires=("cuda>=8.0",), description="float32 weights, TF32 matmuls and convolutions"),
        VariantRow("fp16_amp", description="float16 autocast with a gradient scaler"),
        VariantRow("bf16_amp", requires=("dtype:bfloat16",), description="bfloat16 autocast"),
        VariantRow("fp16", requires=("cuda",), description="float16 weights, gradients and optimizer state"),
        VariantRow("bf16", requires=("cuda", "dtype:bfloat16"),
                   description="bfloat16 weights, gradients and optimizer state"),
    )
    def _workload(self, state: PrecisionState, params, name: str) -> Workload:
        prec = PRECISIONS[name]
        if state.device == "cpu" and torch.float16 in (prec.autocast, prec.weights) and not cpu_has_fast_fp16():
            raise Skip("this CPU has no native float16 matmul (AMX-FP16/AVX512-FP16): its fallback "
                       "runs tens of times slower than float32, so a timing would measure the fallback")
        step = state.trainer(prec)
        inputs, targets = state.batch(0, prec)
        # Once, untimed, outside the engine's peak-memory call; the same work for all.
        flops, method = state.reference("flops", lambda: training_step_flops(state.spec, lambda: count_flops(
            lambda: state.trainer(PRECISIONS["fp32"])(*state.batch(0, PRECISIONS["fp32"])))[0]))

        def output():
            return {
                "memory": measure_step_memory(step, inputs, targets, state.device),
                "forward": state.forward_output(prec),
                "run": state.train_k_steps(prec),
            }

        info = {"autocast": str(prec.autocast), "weights": str(prec.weights), "tf32": prec.tf32,
                "grad_scaler": prec.scaler, "flops_method": method}
        return Workload(lambda: step(inputs, targets), flops=flops, items=params["batch"],
                        items_unit="samples/s", output=output, info=info, dtype=peak_dtype(prec))

    # ---------------------------------------------------------------- quality
    def evaluate(self, state: PrecisionState, params, variant, output):
        prec = PRECISIONS[variant]
        memory, run = output["memory"], output["run"]
        ref_out = state.reference("float64_output", state.float64_output)
        if variant == "fp32":
            state.cache.setdefault("fp32_run", run)
        ref_run = state.reference("fp32_run", lambda: state.train_k_steps(PRECISIONS["fp32"]))
        deviation = abs(run["loss"] - ref_run["loss"]) / abs(ref_run["loss"]) if ref_run["loss"] else math.nan
        metrics = {
            "fwd_rel_error": relative_error(output["forward"], ref_out),
            "loss_after_k": {"value": run["loss"], "k_steps": state.k_steps, "curve": run["curve"]},
            "loss_deviation": {"value": deviation, "fp32_loss": ref_run["loss"]},
            "total_memory": memory.total_metric(),
        }
        if prec.scaler:
            metrics["scaler_skipped_steps"] = {"value": run["skipped"], "of": state.k_steps}
        return metrics
