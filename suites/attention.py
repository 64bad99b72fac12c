"""Attention variants: exact softmax attention against linear-time alternatives.

Question: how much faster (and leaner) are linear attention, Performer and FLASH than
softmax attention at a given sequence length on this device, and how far do the
approximations land from exact softmax attention, on inputs whose attention is nearly uniform
and on inputs whose attention is peaked as in trained models?

Variants
- ``softmax``: matmul, softmax, matmul, materialising the N x N scores.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with PyTorch's backend choice;
  on CUDA also one variant per backend (``sdpa_flash``, ``sdpa_efficient``, ``sdpa_cudnn``,
  ``sdpa_math``), skipped with the reason where the backend refuses the inputs.
- ``linear``: Katharopoulos et al. (2020), feature map elu(x)+1; the causal form is computed
  chunk by chunk with running sums, never building an N x N matrix.
- ``performer``: FAVOR+ (Choromanski et al. 2021), positive orthogonal random features; the
  number of features is the variant param ``features``.
- ``flash``: the mixed-chunk attention of FLASH (Hua et al. 2022, "Transformer Quality in
  Linear Time"): squared-ReLU quadratic attention inside chunks plus linear attention across
  chunks (causal: only earlier chunks), with the per-dimension scale and offset that produce
  its queries and keys. The gating of the full layer (an elementwise product with a separate
  projection) is left out, as the projections of the other variants are.
- ``uniform``: the trivial answer, every query attending equally to all keys it sees (mean of
  v; causal: the running mean). Its ``rel_error`` row is the bar an approximation must clear.

Metrics: latency, peak memory, achieved TFLOP/s and tokens/s for all variants. For
``softmax``, ``sdpa*``, ``linear`` and ``performer`` also ``rel_error``: the relative Frobenius
error of the forward output against float64 softmax attention on the same inputs (for
``linear`` it is a distance to softmax attention, since its kernel is a different one).
FLASH is a different layer with its own learned attention, not an approximation of softmax
attention, so it gets no error against softmax; its speed and memory are comparable.

Inputs (grid param ``inputs``; v is always a seeded standard Gaussian):
- ``gaussian``: q, k seeded Gaussians with standard deviation ``qk_std``, so the logits have
  standard deviation qk_std^2. FAVOR+'s estimator variance grows like exp(|q+k|^2 / sqrt(d)),
  so at qk_std=1 and d >= 32 Performer needs far more features than is practical, while at 0.5
  its error falls quickly with the feature count. But at 0.5 the true attention is nearly
  uniform (entropy within 1% of log N), so the trivial ``uniform`` answer is nearly right too.
- ``clustered``: keys around 16 random centres per head and queries near them
  (:func:`clustered_qk`): a query's logit with keys of its own centre is about
  ``logit_scale``, ``qk_std`` is the spread around the centres. Attention is then peaked as
  in trained models (``attention_entropy`` well below log N). ``logit_scale`` only shapes
  ``clustered`` inputs; the profiles sweep one value, so ``gaussian`` rows are not repeated.
``attention_entropy`` (nats) reports how peaked the true attention of each input is, with
``uniform_entropy`` (log of the keys each query sees) beside it.

Finding (quick profile, CPU, seq_len 256, d 32): on ``gaussian`` inputs at qk_std 0.5 the
attention entropy is 5.51 nats of a possible 5.55 and ``uniform`` has error 0.23, which
linear attention (0.22) barely beats and Performer with 128 features (0.40) does not. On
``clustered`` inputs (entropy 2.6 nats) every linear-time approximation lands near the
trivial answer's error (uniform 0.99, linear 0.97, Performer-128 0.86): their kernels do not
reproduce low-entropy ("spiky") attention, as Zhang et al. (2024, Hedgehog) find for linear
attentions on trained models' attention maps.

FLOPs: exact attention uses the standard count 4*B*H*N^2*D (halved when causal; x3.5 for
forward+backward), so TFLOP/s compares across SDPA backends; the linear-time variants report
the matmul FLOPs they execute, counted by FlopCounterMode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness import Band, Metric, Profile, Skip, Suite, Timing, VariantRow, Workload, variant, variant_table
from harness.metrics.numeric import relative_error
from suites.common.attention_kernels import (
    attention_entropy,
    clustered_qk,
    exact_attention_flops,
    flash_attention,
    flash_weights,
    gaussian_qk,
    linear_attention,
    orthogonal_random_features,
    performer_attention,
    reference_attention,
    sdpa_attention,
    sdpa_backend_chosen,
    softmax_attention,
    uniform_attention,
)
from suites.common.operators import DTYPES

INPUT_KINDS = ("gaussian", "clustered")


@dataclass
class AttentionInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor | None
    generator_seed: int
    cache: dict = field(default_factory=dict)


class Attention(Suite):
    """Softmax vs SDPA backends vs linear vs Performer vs FLASH attention."""

    name = "attention"
    description = "softmax attention against SDPA backends, linear attention, Performer and FLASH"
    grid = {
        "batch": [4],
        "heads": [8],
        "seq_len": [512, 1024, 2048, 4096],
        "head_dim": [64],
        "causal": [False, True],
        "dtype": ["float32"],
        "pass": ["forward", "forward+backward"],
        "inputs": list(INPUT_KINDS),
        "qk_std": [0.5, 1.0],
        "logit_scale": [8.0],
    }
    profiles = {
        "quick": Profile(
            grid={"batch": [1], "heads": [2], "seq_len": [256], "head_dim": [32], "qk_std": [0.5],
                  "features": [16, 128]},
            timing=Timing(warmup_s=0.02, budget_s=0.08, min_runs=3, rel_spread=0.02),
            description="2 CPU cores in seconds: one short sequence, both causal modes and passes",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={
                "batch": [2],
                "heads": [16],
                "seq_len": [512, 1024, 2048, 4096, 8192, 16384, 32768],
                "head_dim": [64, 128],
                "dtype": ["bfloat16"],
                "qk_std": [0.5],
                "features": [256],
            },
            timing=Timing(warmup_s=0.1, budget_s=1.0, min_runs=10, rel_spread=0.005),
            description="the GPU sweep: seq_len 512 to 32k in bf16 (OOM records where memory ends)",
        ),
    }
    reference = "softmax"
    # exact attention computed another way must agree with softmax attention
    bands = [Band("rel_error", max=1e-3, variants=("sdpa",))]
    metrics = [
        Metric("rel_error", "", "lower", "relative Frobenius error of the output against float64 softmax attention",
               ratio=False),
        Metric("attention_entropy", "nats", "lower",
               "mean entropy of the rows of the true (float64 softmax) attention on these inputs: a property of the "
               "input kind, the same for every variant (uniform_entropy: log of the keys each query sees)",
               ratio=False),
    ]
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device) -> AttentionInputs:
        dtype = DTYPES[params["dtype"]]
        gen = torch.Generator(device=device).manual_seed(1234)
        shape = (params["batch"], params["heads"], params["seq_len"], params["head_dim"])
        backward = params["pass"] == "forward+backward"

        kind = params["inputs"]
        if kind == "gaussian":
            q, k = gaussian_qk(shape, params["qk_std"], gen, device)
        elif kind == "clustered":
            q, k = clustered_qk(shape, params["qk_std"], params["logit_scale"], gen, device)
        else:
            raise Skip(f"unknown input kind {kind!r} (use {' or '.join(INPUT_KINDS)})")
        v = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        q, k, v = (t.to(dtype).requires_grad_(backward) for t in (q, k, v))
        dout = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype) if backward else None
        return AttentionInputs(q, k, v, dout, generator_seed=1234)

    def workload(self, state: AttentionInputs, params, attn, exact: bool, flops: float | None = None) -> Workload:
        q, k, v, causal = state.q, state.k, state.v, params["causal"]
        b, h, n, d = q.shape
        if exact:
            flops = exact_attention_flops(b, h, n, d, causal, params["pass"])
        if params["pass"] == "forward":

            def fn():
                with torch.no_grad():
                    return attn(q, k, v, causal)

            output = None
        else:

            def fn():
                attn(q, k, v, causal).backward(state.dout)

            def output():
                with torch.no_grad():
                    return attn(q, k, v, causal)

        def clear_grads():  # untimed, before every call: backward writes fresh gradients
            q.grad = k.grad = v.grad = None

        before = clear_grads if params["pass"] == "forward+backward" else None
        return Workload(fn, flops=flops, items=b * n, items_unit="tokens/s", output=output,
                        before_sample=before)

    # ---------------------------------------------------------------- variants
    @variant()
    def softmax(self, state, params):
        """matmul-softmax-matmul, materialising the scores"""
        return self.workload(state, params, softmax_attention, exact=True)

    @variant()
    def sdpa(self, state, params):
        """torch scaled_dot_product_attention, backend chosen by PyTorch"""
        workload = self.workload(state, params, sdpa_attention, exact=True)
        workload.info["sdpa_backend"] = sdpa_backend_chosen(state.q, state.k, state.v, params["causal"])
        return workload

    @variant_table(  # on CUDA, SDPA held to one backend (arg: the torch.nn.attention.SDPBackend member)
        VariantRow("sdpa_flash", "FLASH_ATTENTION", requires=("cuda",),
                   description="SDPA restricted to the FlashAttention backend"),
        VariantRow("sdpa_efficient", "EFFICIENT_ATTENTION", requires=("cuda",),
                   description="SDPA restricted to the memory-efficient backend"),
        VariantRow("sdpa_cudnn", "CUDNN_ATTENTION", requires=("cuda",),
                   description="SDPA restricted to the cuDNN backend"),
        VariantRow("sdpa_math", "MATH", requires=("cuda",),
                   description="SDPA restricted to the math (reference) backend"),
    )
    def _sdpa_backend(self, state, params, backend_name: str):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)

        def attn(q, k, v, causal):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        try:  # an unsupported backend/dtype/shape is a skip, not a failure
            with torch.no_grad():
                attn(state.q[:, :, :8], state.k[:, :, :8], state.v[:, :, :8], params["causal"])
        except RuntimeError as exc:
            raise Skip(f"SDPA backend {backend_name} refuses these inputs: {str(exc).splitlines()[0][:200]}") from None
        workload = self.workload(state, params, attn, exact=True)
        workload.info["sdpa_backend"] = backend_name
        return workload

    @variant()
    def linear(self, state, params):
        """linear attention, elu+1 feature map (causal: chunked running sums)"""
        return self.workload(state, params, linear_attention, exact=False)

    @variant(params={"features": [64, 256]})
    def performer(self, state, params):
        """FAVOR+ with positive orthogonal random features"""
        gen = torch.Generator().manual_seed(state.generator_seed + params["features"])
        proj = orthogonal_random_features(params["features"], state.q.shape[-1], gen, state.q.device, torch.float32)

        def attn(q, k, v, causal):
            return performer_attention(q, k, v, causal, proj)

        return self.workload(state, params, attn, exact=False)

    @variant()
    def flash(self, state, params):
        """FLASH mixed-chunk attention (quadratic in chunks, linear across)"""
        gen = torch.Generator().manual_seed(state.generator_seed + 7)
        weights = flash_weights(state.q.shape[-1], gen, state.q.device, state.q.dtype)

        def attn(q, k, v, causal):
            return flash_attention(q, k, v, causal, weights)

        return self.workload(state, params, attn, exact=False)

    @variant()
    def uniform(self, state, params):
        """the trivial answer: mean of v (causal: running mean); an approximation must beat its error"""
        b, h, n, d = state.q.shape
        flops = 2.0 * b * h * n * d * (2 if params["pass"] == "forward+backward" else 1)  # sum and divide
        return self.workload(state, params, uniform_attention, exact=False, flops=flops)

    # ---------------------------------------------------------------- quality
    def wants_output(self, variant: str) -> bool:
        return variant != "flash"

    def evaluate(self, state: AttentionInputs, params, variant, output):
        if "reference" not in state.cache:
            state.cache["reference"] = reference_attention(state.q, state.k, state.v, params["causal"])
            state.cache["entropy"] = attention_entropy(state.q, state.k, params["causal"])
        entropy, uniform_entropy = state.cache["entropy"]
        return {"rel_error": relative_error(output, state.cache["reference"]),
                "attention_entropy": {"value": entropy, "uniform_entropy": uniform_entropy,
                                      "inputs": params["inputs"]}}
