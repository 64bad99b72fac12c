"""Attention kernels: exact softmax attention, SDPA, linear attention, Performer (FAVOR+), FLASH's
mixed-chunk attention and the trivial uniform answer, with the float64 reference, the attention
entropy of an input and the seeded query/key generators the attention suite draws its inputs with.

Every kernel takes ``(q, k, v, causal)`` tensors of shape (batch, heads, seq_len, head_dim) (plus its
own weights where it has them) and returns the attention output of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
