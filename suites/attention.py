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

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness import Band, Metric, Profile, Skip, Suite, Timing, Workload, variant
from harness.metrics.numeric import relative_error

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
FLASH_CHUNK = 256  # group size of FLASH's mixed-chunk attention (the paper's default)
LINEAR_CHUNK = 64  # chunk length of the causal linear-attention scan


# --------------------------------------------------------------------------- the operations
def softmax_attention(q, k, v, causal: bool):
    """Plain attention: scores = q k^T / sqrt(d), softmax over keys, times v."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        n, m = scores.shape[-2:]
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def sdpa_attention(q, k, v, causal: bool):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def sdpa_backend_chosen(q, k, v, causal: bool) -> str:
    """The SDPA backend PyTorch picks for these inputs (its dispatcher's own choice function).

    On the CPU the names are those of PyTorch's CPU kernels (FLASH_ATTENTION is the CPU flash
    kernel). Where this torch has no choice function, says so.
    """
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return "undetermined: this torch has no torch._fused_sdp_choice"
    from torch.nn.attention import SDPBackend

    try:
        code = int(choose(q, k, v, None, 0.0, causal))
    except Exception as exc:  # noqa: BLE001 - a diagnostic, never a failure of the case
        return f"undetermined: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    names = {int(member.value): name for name, member in SDPBackend.__members__.items()}
    name = names.get(code, f"backend {code}")
    return f"{name} (CPU kernel)" if q.device.type == "cpu" else name


def elu_feature_map(x):
    return F.elu(x) + 1.0


def _pad_to_chunks(x, chunk: int):
    n = x.shape[-2]
    pad = (-n) % chunk
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x


def kernel_attention(fq, fk, v, causal: bool, eps: float = 1e-6, chunk: int = LINEAR_CHUNK):
    """Attention with a feature map already applied: phi(q) phi(k)^T v, normalised.

    Non-causal: phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j)).
    Causal: the same with sums over j <= i, computed by chunks: an exact lower-triangular
    product inside each chunk plus the running state (sum of phi(k)^T v) of earlier chunks.
    Sums are accumulated in float32 for half-precision inputs.
    """
    out_dtype = v.dtype
    acc = torch.float32 if v.dtype in (torch.float16, torch.bfloat16) else v.dtype
    if not causal:
        kv = torch.matmul(fk.transpose(-2, -1).to(acc), v.to(acc))  # (..., F, D)
        z = fk.to(acc).sum(dim=-2)  # (..., F)
        num = torch.matmul(fq.to(acc), kv)
        den = torch.matmul(fq.to(acc), z.unsqueeze(-1))
        return (num / (den + eps)).to(out_dtype)
    n = fq.shape[-2]
    c = min(chunk, n)
    fq_, fk_, v_ = (_pad_to_chunks(t.to(acc), c) for t in (fq, fk, v))
    shape = fq_.shape[:-2]
    nc = fq_.shape[-2] // c
    fqc = fq_.reshape(*shape, nc, c, fq_.shape[-1])
    fkc = fk_.reshape(*shape, nc, c, fk_.shape[-1])
    vc = v_.reshape(*shape, nc, c, v_.shape[-1])
    tri = torch.ones(c, c, dtype=torch.bool, device=fq.device).tril()
    local = torch.matmul(fqc, fkc.transpose(-2, -1)).masked_fill(~tri, 0.0)  # (..., nc, c, c)
    num = torch.matmul(local, vc)
    den = local.sum(dim=-1, keepdim=True)
    kv = torch.matmul(fkc.transpose(-2, -1), vc)  # per-chunk state (..., nc, F, D)
    kv_before = torch.cumsum(kv, dim=-3) - kv  # exclusive prefix: earlier chunks only
    z = fkc.sum(dim=-2)  # (..., nc, F)
    z_before = torch.cumsum(z, dim=-2) - z
    num = num + torch.matmul(fqc, kv_before)
    den = den + torch.matmul(fqc, z_before.unsqueeze(-1))
    out = (num / (den + eps)).reshape(*shape, nc * c, v.shape[-1])[..., :n, :]
    return out.to(out_dtype)


def linear_attention(q, k, v, causal: bool):
    """Katharopoulos et al.: kernel attention with phi(x) = elu(x) + 1."""
    return kernel_attention(elu_feature_map(q), elu_feature_map(k), v, causal)


def orthogonal_random_features(num_features: int, dim: int, generator: torch.Generator, device, dtype):
    """FAVOR+ projection: stacked orthogonal blocks, rows scaled to Gaussian-vector norms."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        g = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        qmat, _ = torch.linalg.qr(g)
        blocks.append(qmat.T)
    w = torch.cat(blocks, dim=0)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms.unsqueeze(1)).to(device=device, dtype=dtype)


def favor_features(x, projection, is_query: bool):
    """Positive random features exp(w.x - |x|^2/2) / sqrt(m), with x scaled by d^-1/4.

    Queries are shifted by their own row maximum, which cancels in the attention ratio.
    Keys are not shifted: a maximum over the sequence would let later keys change earlier
    outputs in the causal form, and w.x - |x|^2/2 <= |w|^2/2 bounds them anyway.
    """
    d = x.shape[-1]
    x = x * d**-0.25
    proj = torch.matmul(x, projection.T) - (x * x).sum(dim=-1, keepdim=True) / 2.0
    if is_query:
        proj = proj - proj.amax(dim=-1, keepdim=True)
    return torch.exp(proj) / math.sqrt(projection.shape[0])


def performer_attention(q, k, v, causal: bool, projection):
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    p = projection.to(acc)
    fq = favor_features(q.to(acc), p, is_query=True)
    fk = favor_features(k.to(acc), p, is_query=False)
    return kernel_attention(fq, fk, v, causal)


@dataclass
class FlashWeights:
    """Per-dimension scale and offset producing FLASH's quadratic and linear queries and keys."""

    gamma: torch.Tensor  # (4, D): quad_q, quad_k, lin_q, lin_k
    beta: torch.Tensor


def flash_weights(dim: int, generator: torch.Generator, device, dtype) -> FlashWeights:
    gamma = 1.0 + 0.02 * torch.randn(4, dim, generator=generator)
    beta = 0.02 * torch.randn(4, dim, generator=generator)
    return FlashWeights(gamma.to(device=device, dtype=dtype), beta.to(device=device, dtype=dtype))


def flash_attention(q, k, v, causal: bool, weights: FlashWeights, chunk: int = FLASH_CHUNK):
    """FLASH mixed-chunk attention: relu^2 attention in chunks + linear attention across them."""
    n = q.shape[-2]
    c = min(chunk, n)
    g, b = weights.gamma, weights.beta
    quad_q, lin_q = q * g[0] + b[0], q * g[2] + b[2]
    quad_k, lin_k = k * g[1] + b[1], k * g[3] + b[3]
    shape = q.shape[:-2]
    padded = [_pad_to_chunks(t, c) for t in (quad_q, quad_k, lin_q, lin_k, v)]
    nc = padded[0].shape[-2] // c
    qq, qk, lq, lk, vv = (t.reshape(*shape, nc, c, t.shape[-1]) for t in padded)
    scores = torch.relu(torch.matmul(qq, qk.transpose(-2, -1)) / c) ** 2
    if causal:
        tri = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~tri, 0.0)
    quad = torch.matmul(scores, vv)
    kv = torch.matmul(lk.transpose(-2, -1), vv)  # (..., nc, D, D)
    if causal:
        kv = (torch.cumsum(kv, dim=-3) - kv) / c  # earlier chunks only
    else:
        kv = kv.sum(dim=-3, keepdim=True) / n
    lin = torch.matmul(lq, kv)
    return (quad + lin).reshape(*shape, nc * c, v.shape[-1])[..., :n, :]


def uniform_attention(q, k, v, causal: bool):
    """The trivial answer: every query attends equally to every key it may see.

    Non-causal: the mean of v; causal: the running mean of v up to each position. An
    approximation whose error is not below this one's has learned nothing about q and k.
    """
    if not causal:
        return v.mean(dim=-2, keepdim=True).expand_as(v)
    acc = torch.float32 if v.dtype in (torch.float16, torch.bfloat16) else v.dtype
    counts = torch.arange(1, v.shape[-2] + 1, device=v.device, dtype=acc).unsqueeze(-1)
    return (torch.cumsum(v.to(acc), dim=-2) / counts).to(v.dtype)


def _float64_attention_blocks(q, k, causal: bool, max_bytes: int):
    """Float64 softmax attention probabilities in query blocks that bound memory: (start, probs)."""
    q64, k64 = (t.detach().to(torch.float64) for t in (q, k))
    n = q64.shape[-2]
    per_row = q64.shape[:-2].numel() * k64.shape[-2] * 8 * 3
    block = max(1, min(n, max_bytes // max(per_row, 1)))
    scale = 1.0 / math.sqrt(q64.shape[-1])
    for s in range(0, n, block):
        qb = q64[..., s : s + block, :]
        scores = torch.matmul(qb, k64.transpose(-2, -1)) * scale
        if causal:
            rows = torch.arange(s, s + qb.shape[-2], device=q.device).unsqueeze(1)
            cols = torch.arange(k64.shape[-2], device=q.device).unsqueeze(0)
            scores = scores.masked_fill(cols > rows, float("-inf"))
        yield s, torch.softmax(scores, dim=-1)


def reference_attention(q, k, v, causal: bool, max_bytes: int = 1 << 30):
    """Float64 softmax attention, computed in query blocks to bound memory."""
    v64 = v.detach().to(torch.float64)
    return torch.cat([torch.matmul(p, v64) for _, p in _float64_attention_blocks(q, k, causal, max_bytes)], dim=-2)


def attention_entropy(q, k, causal: bool, max_bytes: int = 1 << 30) -> tuple[float, float]:
    """Mean entropy (nats) of the rows of the true softmax attention, and that of uniform rows.

    The second number is the mean of log(keys a query sees): log N, or its causal average.
    Their ratio says how peaked the attention is (1: uniform; trained models sit far below).
    """
    total, rows = 0.0, 0
    for _, p in _float64_attention_blocks(q, k, causal, max_bytes):
        total += float(-(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1).sum())
        rows += p[..., 0].numel()
    n = k.shape[-2]
    uniform = float(torch.log(torch.arange(1, n + 1, dtype=torch.float64)).mean()) if causal else math.log(n)
    return total / rows, uniform


def gaussian_qk(shape, std: float, generator: torch.Generator, device):
    """q and k with independent N(0, std^2) entries: the logits q.k / sqrt(d) have std std^2."""
    return tuple(std * torch.randn(shape, generator=generator, device=device, dtype=torch.float32) for _ in range(2))


def clustered_qk(shape, spread: float, logit_scale: float, generator: torch.Generator, device,
                 clusters: int = 16):
    """Keys drawn around a few random centres and queries near them, as trained attention looks.

    Per (batch, head), ``clusters`` random unit directions u_j; each key is u_a + noise and each
    query logit_scale (u_b + noise), both times d^(1/4), with noise of norm about ``spread``. A
    query's logit with keys of its own centre is then about ``logit_scale``, with others about 0
    (random directions are nearly orthogonal), so it attends to about N / clusters keys, and
    within them the noise sharpens the weights further as the scale grows.
    """
    b, h, n, d = shape

    def around(centres, n_points):
        pick = torch.randint(0, clusters, (b, h, n_points), generator=generator, device=device)
        base = torch.gather(centres, 2, pick.unsqueeze(-1).expand(-1, -1, -1, d))
        noise = torch.randn(b, h, n_points, d, generator=generator, device=device)
        return d**0.25 * (base + spread / math.sqrt(d) * noise)

    centres = torch.randn(b, h, clusters, d, generator=generator, device=device)
    centres = centres / centres.norm(dim=-1, keepdim=True)
    k = around(centres, n)
    q = logit_scale * around(centres, n)
    return q, k


def exact_attention_flops(b: int, h: int, n: int, d: int, causal: bool, passes: str) -> float:
    flops = 4.0 * b * h * n * n * d
    if causal:
        flops /= 2
    if passes == "forward+backward":
        flops *= 3.5
    return flops


# --------------------------------------------------------------------------- the suite
INPUT_KINDS = ("gaussian", "clustered")


@dataclass
class AttentionInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor | None
    generator_seed: int
    cache: dict = field(default_factory=dict)


SDPA_BACKENDS = {
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
    "sdpa_cudnn": "CUDNN_ATTENTION",
    "sdpa_math": "MATH",
}


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

    @variant(requires=("cuda",))
    def sdpa_flash(self, state, params):
        """SDPA restricted to the FlashAttention backend"""
        return self._sdpa_backend(state, params, SDPA_BACKENDS["sdpa_flash"])

    @variant(requires=("cuda",))
    def sdpa_efficient(self, state, params):
        """SDPA restricted to the memory-efficient backend"""
        return self._sdpa_backend(state, params, SDPA_BACKENDS["sdpa_efficient"])

    @variant(requires=("cuda",))
    def sdpa_cudnn(self, state, params):
        """SDPA restricted to the cuDNN backend"""
        return self._sdpa_backend(state, params, SDPA_BACKENDS["sdpa_cudnn"])

    @variant(requires=("cuda",))
    def sdpa_math(self, state, params):
        """SDPA restricted to the math (reference) backend"""
        return self._sdpa_backend(state, params, SDPA_BACKENDS["sdpa_math"])

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
