"""State-space layers, their scans, and the selective copying task of the ``ssm`` suite.

The recurrence of a diagonal state-space layer, per channel d and state n,

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,      y_t = sum_n C_t * h_t + D * u_t,

is computed here in four ways that must agree: a sequential loop over time (also the float64
reference), a parallel associative scan (odd-even recursion over the operator
(a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2): O(L) work, O(log L) depth), a chunked scan (a
sequential pass inside every chunk at once, a pass over chunk boundaries, then a correction
of each chunk by the state entering it: 2c + L/c steps), and, for the time-invariant S4D
layer, a causal convolution with its kernel through the FFT.

Shapes: ``u`` and ``delta`` (batch, length, channels); ``A`` (channels, state), negative;
``B`` and ``C`` broadcastable to (batch, length, channels, state): (b, l, 1, n) for Mamba's
input-dependent B and C, (1, 1, d, n) for S4D's fixed ones. Half-precision inputs are
scanned in float32 (as fused kernels keep their state in float32) and cast back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

SCANS = ("sequential", "parallel", "chunked")


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _at(t: torch.Tensor, i: int, dim: int = 1) -> torch.Tensor:
    """Index ``dim`` of a tensor that may be broadcast (size 1) along it."""
    return t.select(dim, i if t.shape[dim] > 1 else 0)


# --------------------------------------------------------------------------- the scans
def sequential_scan(u, delta, A, B, C):
    """The recurrence step by step: the definition, and (in float64) the reference."""
    out_dtype = u.dtype
    u, delta, A, B, C = (_acc(t) for t in (u, delta, A, B, C))
    b, length, d = u.shape
    h = u.new_zeros(b, d, A.shape[-1])
    ys = []
    for t in range(length):
        dt = delta[:, t, :, None]
        h = torch.exp(dt * A) * h + (dt * u[:, t, :, None]) * _at(B, t)
        ys.append((h * _at(C, t)).sum(-1))
    return torch.stack(ys, dim=1).to(out_dtype)


def _assoc_scan(a, x):
    """Inclusive scan of h_t = a_t h_{t-1} + x_t along dim 1 (odd-even recursion)."""
    length = a.shape[1]
    if length == 1:
        return x
    if length % 2:
        a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)
        x = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    a_even, a_odd = a[:, 0::2], a[:, 1::2]
    x_even, x_odd = x[:, 0::2], x[:, 1::2]
    h_odd = _assoc_scan(a_odd * a_even, a_odd * x_even + x_odd)  # h at positions 1, 3, 5, ...
    h_even = torch.cat([x_even[:, :1], a_even[:, 1:] * h_odd[:, :-1] + x_even[:, 1:]], dim=1)
    h = torch.stack([h_even, h_odd], dim=2).flatten(1, 2)
    return h[:, :length]


def parallel_scan(u, delta, A, B, C):
    """All states at once with a work-efficient associative scan over time (b*l*d*n memory)."""
    out_dtype = u.dtype
    u, delta, A, B, C = (_acc(t) for t in (u, delta, A, B, C))
    dt = delta.unsqueeze(-1)
    h = _assoc_scan(torch.exp(dt * A), dt * u.unsqueeze(-1) * B)
    return (h * C).sum(-1).to(out_dtype)


def default_chunk(length: int) -> int:
    """A power of two near sqrt(length): balances steps inside and across chunks."""
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(length)))))


def chunked_scan(u, delta, A, B, C, chunk: int | None = None):
    """Chunks scanned in lockstep, then the state entering each chunk is propagated and added."""
    out_dtype = u.dtype
    u, delta, A, B, C = (_acc(t) for t in (u, delta, A, B, C))
    b, length, d = u.shape
    n = A.shape[-1]
    c = chunk or default_chunk(length)
    pad = (-length) % c
    delta = delta.expand(b, length, d)
    if pad:  # padded steps have delta 0: decay 1, no input, so the state passes unchanged
        u, delta = F.pad(u, (0, 0, 0, pad)), F.pad(delta, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad)) if B.shape[1] > 1 else B
        C = F.pad(C, (0, 0, 0, 0, 0, pad)) if C.shape[1] > 1 else C
    nc = (length + pad) // c

    def chunks(t):  # (b, l, ...) -> (b, nc, c, ...); broadcast time stays broadcast
        if t.shape[1] == 1:
            return t.unsqueeze(1)
        return t.reshape(t.shape[0], nc, c, *t.shape[2:])

    uc, dc, Bc, Cc = chunks(u), chunks(delta), chunks(B), chunks(C)
    h = u.new_zeros(b, nc, d, n)
    decay = torch.ones_like(h)
    local = []
    for t in range(c):  # every chunk at once, zero state at each chunk's start
        dt = _at(dc, t, 2).unsqueeze(-1)
        step = torch.exp(dt * A)
        h = step * h + dt * _at(uc, t, 2).unsqueeze(-1) * _at(Bc, t, 2)
        decay = decay * step
        local.append((h * _at(Cc, t, 2)).sum(-1))
    carried, entering = u.new_zeros(b, d, n), []
    for k in range(nc):  # the true state entering each chunk
        entering.append(carried)
        carried = decay[:, k] * carried + h[:, k]
    h0 = torch.stack(entering, dim=1)
    decay = torch.ones_like(h)
    ys = []
    for t in range(c):  # add the entering state's contribution, decayed to step t
        decay = decay * torch.exp(_at(dc, t, 2).unsqueeze(-1) * A)
        ys.append(local[t] + (decay * h0 * _at(Cc, t, 2)).sum(-1))
    y = torch.stack(ys, dim=2).reshape(b, nc * c, d)
    return y[:, :length].to(out_dtype)


def fused_scan(u, delta, A, B, C):
    """``mamba_ssm``'s CUDA selective-scan kernel (B, C input-dependent, one group)."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y = selective_scan_fn(
        u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.float().contiguous(),
        B.squeeze(2).transpose(1, 2).contiguous(), C.squeeze(2).transpose(1, 2).contiguous(),
    )
    return y.transpose(1, 2)


SCAN_FUNCTIONS = {"sequential": sequential_scan, "parallel": parallel_scan, "chunked": chunked_scan,
                  "fused": fused_scan}


def fft_causal_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[:, t, d] = sum_{s<=t} kernel[d, s] u[:, t-s, d], through a zero-padded real FFT."""
    out_dtype = u.dtype
    length = u.shape[1]
    n = 2 * length
    uf = torch.fft.rfft(_acc(u).transpose(1, 2), n=n)
    kf = torch.fft.rfft(_acc(kernel), n=n)
    return torch.fft.irfft(uf * kf, n=n)[..., :length].transpose(1, 2).to(out_dtype)


# --------------------------------------------------------------------------- the layers
class S4DLayer(torch.nn.Module):
    """Diagonal time-invariant SSM (S4D-Real, Gu et al. 2022): in-projection, SSM, out-projection.

    A = -(1..N) per channel, B = 1, C ~ N(0, 1), dt log-uniform in [1e-3, 1e-1], zero-order
    hold. ``form`` picks the FFT convolution with the SSM kernel or the recurrent scan.
    """

    def __init__(self, d_model: int, d_state: int):
        super().__init__()
        self.w_in = torch.nn.Linear(d_model, d_model)
        self.w_out = torch.nn.Linear(d_model, d_model)
        self.log_dt = torch.nn.Parameter(torch.rand(d_model) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.a_log = torch.nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_model, 1))
        self.c = torch.nn.Parameter(torch.randn(d_model, d_state))
        self.d = torch.nn.Parameter(torch.ones(d_model))
        self.register_buffer("b", torch.ones(d_model, d_state), persistent=False)

    def discretized(self):
        """(dt, A, B-bar / dt): ZOH's B-bar, divided by dt as the scans multiply by delta."""
        dt, A = torch.exp(self.log_dt), -torch.exp(self.a_log)
        dtA = dt.unsqueeze(-1) * A
        b_bar = torch.expm1(dtA) / A * self.b
        return dt, A, b_bar / dt.unsqueeze(-1)

    def kernel(self, length: int) -> torch.Tensor:
        """K[d, l] = sum_n C B-bar exp(dt A)^l, the layer's causal convolution kernel."""
        dt, A, b_eff = self.discretized()
        dtA = _acc(dt.unsqueeze(-1) * A)
        steps = torch.arange(length, device=dtA.device, dtype=dtA.dtype)
        powers = torch.exp(dtA.unsqueeze(-1) * steps)  # (d, n, l)
        return torch.einsum("dn,dnl->dl", _acc(self.c * b_eff * dt.unsqueeze(-1)), powers)

    def mix(self, u: torch.Tensor, form: str) -> torch.Tensor:
        if form == "fft":
            return fft_causal_conv(u, self.kernel(u.shape[1]))
        dt, A, b_eff = self.discretized()
        b, length, d = u.shape
        return SCAN_FUNCTIONS[form](u, dt.expand(b, length, d), A, b_eff[None, None], self.c[None, None])

    def forward(self, x: torch.Tensor, form: str = "fft") -> torch.Tensor:
        u = self.w_in(x)
        return self.w_out(self.mix(u, form) + self.d * u)


class S6Layer(torch.nn.Module):
    """Selective SSM (S6, Gu & Dao 2023) without gating: delta, B, C are functions of the input.

    delta = softplus(dt_proj(x_proj(u))) with dt_proj's bias set so delta starts in
    [1e-3, 1e-1], A = -(1..N) per channel (S4D-Real), B-bar = delta B as in Mamba.
    """

    def __init__(self, d_model: int, d_state: int, dt_rank: int | None = None):
        super().__init__()
        self.d_state = d_state
        self.dt_rank = dt_rank or max(1, math.ceil(d_model / 16))
        self.w_in = torch.nn.Linear(d_model, d_model)
        self.x_proj = torch.nn.Linear(d_model, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = torch.nn.Linear(self.dt_rank, d_model)
        dt = torch.exp(torch.rand(d_model) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.a_log = torch.nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_model, 1))
        self.d = torch.nn.Parameter(torch.ones(d_model))
        self.w_out = torch.nn.Linear(d_model, d_model)

    def scan_inputs(self, u: torch.Tensor):
        """(delta, A, B, C) for input ``u`` (batch, length, d_model)."""
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        return delta, -torch.exp(self.a_log), B.unsqueeze(2), C.unsqueeze(2)

    def forward(self, x: torch.Tensor, scan: str = "chunked") -> torch.Tensor:
        u = self.w_in(x)
        y = SCAN_FUNCTIONS[scan](u, *self.scan_inputs(u))
        return self.w_out(y + self.d * u)


class AttentionLayer(torch.nn.Module):
    """Causal multi-head attention through SDPA, with its input and output projections."""

    def __init__(self, d_model: int, head_dim: int = 64):
        super().__init__()
        self.head_dim = min(head_dim, d_model)
        if d_model % self.head_dim:
            raise ValueError(f"d_model={d_model} is not a multiple of head_dim={self.head_dim}")
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.w_out = torch.nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, form: str = "sdpa") -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, d // self.head_dim, self.head_dim).permute(2, 0, 3, 1, 4)
        if form == "blocked":  # explicit softmax in query blocks: the float64 reference at any length
            o = blocked_causal_attention(q, k, v)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.w_out(o.transpose(1, 2).reshape(b, length, d))


def blocked_causal_attention(q, k, v, max_bytes: int = 1 << 28):
    """softmax(q k^T / sqrt(d), causal) v, computed for blocks of queries to bound memory."""
    n = q.shape[-2]
    per_row = q.shape[:-2].numel() * n * q.element_size() * 3
    block = max(1, min(n, max_bytes // max(per_row, 1)))
    cols = torch.arange(n, device=q.device)
    outs = []
    for s in range(0, n, block):
        qb = q[..., s : s + block, :]
        scores = (qb @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        future = cols.unsqueeze(0) > torch.arange(s, s + qb.shape[-2], device=q.device).unsqueeze(1)
        outs.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v)
    return torch.cat(outs, dim=-2)


def build_layer(kind: str, d_model: int, d_state: int) -> torch.nn.Module:
    if kind == "attention":
        return AttentionLayer(d_model)
    if kind == "s4d":
        return S4DLayer(d_model, d_state)
    if kind == "mamba":
        return S6Layer(d_model, d_state)
    raise ValueError(f"unknown layer kind {kind!r}")


# --------------------------------------------------------------------------- selective copying
@dataclass(frozen=True)
class CopyTask:
    """Selective copying (Gu & Dao 2023, section 3.1), scaled to a CPU.

    A context of ``context`` tokens holds ``n_memorize`` data tokens (from ``vocab``) at random
    positions among noise tokens; then ``n_memorize`` marker tokens follow, at which the model
    must output the data tokens in order. The model: token embedding (plus learned positions
    for attention, which has no order of its own), ``layers`` residual pre-norm blocks of the
    layer under test, a final norm and a linear read-out; trained with AdamW for ``steps``
    steps of fresh random batches, seeded, and scored on held-out sequences.
    """

    context: int = 32
    n_memorize: int = 4
    vocab: int = 8
    d_model: int = 32
    d_state: int = 16
    layers: int = 2
    steps: int = 800
    batch: int = 64
    lr: float = 3e-3
    eval_sequences: int = 1024
    seed: int = 0

    @property
    def length(self) -> int:
        return self.context + self.n_memorize

    @property
    def tokens(self) -> int:  # noise 0, data 1..vocab, marker vocab + 1
        return self.vocab + 2


def selective_copying_batch(task: CopyTask, n: int, generator: torch.Generator):
    """(inputs (n, context + n_memorize), targets (n, n_memorize)) of the selective copying task."""
    k = task.n_memorize
    data = torch.randint(1, task.vocab + 1, (n, k), generator=generator)
    positions = torch.rand(n, task.context, generator=generator).argsort(dim=1)[:, :k].sort(dim=1).values
    context = torch.zeros(n, task.context, dtype=torch.long)
    context.scatter_(1, positions, data)
    markers = torch.full((n, k), task.vocab + 1, dtype=torch.long)
    return torch.cat([context, markers], dim=1), data


class CopyModel(torch.nn.Module):
    """Embedding, pre-norm residual blocks of one layer kind, norm, read-out."""

    def __init__(self, kind: str, task: CopyTask):
        super().__init__()
        self.kind = kind
        self.embed = torch.nn.Embedding(task.tokens, task.d_model)
        self.positions = torch.nn.Parameter(0.02 * torch.randn(task.length, task.d_model)) if kind == "attention" else None
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(task.d_model) for _ in range(task.layers))
        self.blocks = torch.nn.ModuleList(build_layer(kind, task.d_model, task.d_state) for _ in range(task.layers))
        self.norm = torch.nn.LayerNorm(task.d_model)
        self.head = torch.nn.Linear(task.d_model, task.tokens)

    def forward(self, tokens: torch.Tensor, impl: str) -> torch.Tensor:
        x = self.embed(tokens)
        if self.positions is not None:
            x = x + self.positions[: tokens.shape[1]]
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x), impl)
        return self.head(self.norm(x))


TRAIN_IMPL = {"attention": "sdpa", "s4d": "fft", "mamba": "chunked"}


def train_copy_model(kind: str, task: CopyTask) -> CopyModel:
    """Train the task's model built on ``kind`` on the CPU, seeded and deterministic."""
    torch.manual_seed(task.seed)
    model = CopyModel(kind, task)
    opt = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=0.0)
    sched = None  # one-cycle: warm up over 10% of the steps (at least 2), then anneal
    if task.steps >= 4:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.lr, total_steps=task.steps,
                                                    pct_start=max(0.1, 2.0 / task.steps))
    gen = torch.Generator().manual_seed(task.seed + 1)
    k = task.n_memorize
    model.train()
    for _ in range(task.steps):
        inputs, targets = selective_copying_batch(task, task.batch, gen)
        logits = model(inputs, TRAIN_IMPL[kind])[:, -k:]
        loss = F.cross_entropy(logits.reshape(-1, task.tokens), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
    return model.eval()


@torch.no_grad()
def copy_accuracy(model: CopyModel, task: CopyTask, impl: str, device: str = "cpu", batch: int = 256) -> float:
    """Share of the memorized tokens output correctly on held-out sequences (a fixed seed)."""
    gen = torch.Generator().manual_seed(task.seed + 10_000)
    inputs, targets = selective_copying_batch(task, task.eval_sequences, gen)
    model = model.to(device)
    correct = 0
    for s in range(0, task.eval_sequences, batch):
        logits = model(inputs[s : s + batch].to(device), impl)[:, -task.n_memorize :]
        correct += int((logits.argmax(-1).cpu() == targets[s : s + batch]).sum())
    return correct / targets.numel()


_TRAINED: dict[tuple, CopyModel] = {}


def trained_copy_model(kind: str, task: CopyTask) -> CopyModel:
    """The trained model for (kind, task), trained once per process."""
    key = (kind, tuple(sorted(asdict(task).items())))
    if key not in _TRAINED:
        _TRAINED[key] = train_copy_model(kind, task)
    return _TRAINED[key]
