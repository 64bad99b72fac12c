"""Models and synthetic data for training-step benchmarks.

Architectures from the field, randomly initialised (no downloaded weights): torchvision's
``VisionTransformer`` (``vit_b_16`` and a small ViT for the CPU), ``resnet50`` and
``efficientnet_b0``, and a GPT-style decoder stack written here (pre-norm blocks, causal
``scaled_dot_product_attention``, tied embeddings, GPT-2 initialisation).

A model is described by a frozen, picklable :class:`ModelSpec`, so that a worker process
can rebuild exactly the same model from it. Weights depend only on the spec and a seed, and
batches only on the spec, a seed and an index: every variant of a suite sees the same
weights and the same data.

Synthetic data has structure a model can learn, so that losses fall during a few training
steps: images are a class prototype (a smooth random pattern) plus noise; token sequences
follow a seeded random bigram chain (each token has a few likely successors).
Regularisers that draw random numbers (dropout, stochastic depth) are off, so a training step
is a deterministic function of weights and batch, and precisions or recomputation schemes can
be compared step for step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VISION_ARCHS = ("vit", "vit_b_16", "resnet50", "efficientnet_b0")
TOKEN_ARCHS = ("gpt",)


@dataclass(frozen=True)
class ModelSpec:
    """One architecture at one size, with its batch.

    ``input_size`` is the image side in pixels for vision models and the sequence length in
    tokens for the GPT stack. ``depth``, ``width`` and ``heads`` size the transformer stacks
    (``vit``, ``gpt``); ``classes`` is the number of labels (vision) or the vocabulary (GPT).
    """

    arch: str
    batch: int
    input_size: int
    depth: int = 0
    width: int = 0
    heads: int = 0
    classes: int = 1000
    patch: int = 16

    def __post_init__(self) -> None:
        if self.arch not in VISION_ARCHS + TOKEN_ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; known: {', '.join(VISION_ARCHS + TOKEN_ARCHS)}")
        if self.batch < 1 or self.input_size < 1:
            raise ValueError(f"batch and input_size must be positive, got {self.batch} and {self.input_size}")
        if self.arch in ("vit", "gpt") and (self.depth < 1 or self.width < 1 or self.heads < 1):
            raise ValueError(f"{self.arch}: depth, width and heads must be positive")
        if self.arch in ("vit", "gpt") and self.width % self.heads:
            raise ValueError(f"{self.arch}: width {self.width} is not a multiple of heads {self.heads}")

    @property
    def is_vision(self) -> bool:
        return self.arch in VISION_ARCHS

    def with_batch(self, batch: int) -> "ModelSpec":
        return dataclasses.replace(self, batch=batch)


# Named sizes: the standard models for GPU sweeps, and CPU-sized ones for quick profiles (a
# 4-block ViT on 32 px images, a 4-block GPT on 64 tokens, the convnets at 64 px, 100 classes).
PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny": dict(arch="vit", input_size=32, patch=4, depth=4, width=128, heads=4, classes=10),
    "vit_b_16": dict(arch="vit_b_16", input_size=224, classes=1000),
    "resnet50": dict(arch="resnet50", input_size=224, classes=1000),
    "efficientnet_b0": dict(arch="efficientnet_b0", input_size=224, classes=1000),
    "resnet50_64px": dict(arch="resnet50", input_size=64, classes=100),
    "efficientnet_b0_64px": dict(arch="efficientnet_b0", input_size=64, classes=100),
    "gpt_tiny": dict(arch="gpt", input_size=64, depth=4, width=128, heads=4, classes=512),
    "gpt2_small": dict(arch="gpt", input_size=1024, depth=12, width=768, heads=12, classes=50304),
    "gpt2_medium": dict(arch="gpt", input_size=1024, depth=24, width=1024, heads=16, classes=50304),
}


def preset_spec(name: str, batch: int, input_size: int = 0) -> ModelSpec:
    """The spec of a named model (``PRESETS``); ``input_size`` 0 keeps the preset's own."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}")
    fields = dict(PRESETS[name])
    if input_size:
        fields["input_size"] = input_size
    return ModelSpec(batch=batch, **fields)


# --------------------------------------------------------------------------- GPT stack
class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class DecoderBlock(nn.Module):
    """Pre-norm transformer decoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    """A GPT-2-style decoder: token and position embeddings, L blocks, final norm, tied head.

    Exposes ``stem``, ``blocks`` and ``head`` so that a caller can run the blocks its own way
    (activation checkpointing); ``forward`` runs them in order.
    """

    def __init__(self, vocab: int, max_len: int, depth: int, width: int, heads: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                # GPT-2: N(0, 0.02), residual projections scaled down by sqrt(2 L)
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def stem(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.tok(idx) + self.pos(pos)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(x))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.stem(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ViTStack:
    """torchvision ViT seen as stem, blocks and head (the same computation as its forward)."""

    def __init__(self, vit: nn.Module):
        self.vit = vit
        self.blocks = vit.encoder.layers

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        x = self.vit._process_input(images)
        x = torch.cat([self.vit.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.vit.encoder.dropout(x + self.vit.encoder.pos_embedding)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.heads(self.vit.encoder.ln(x)[:, 0])


def as_stack(model: nn.Module):
    """A view of a transformer model with ``stem``, ``blocks`` and ``head``."""
    if isinstance(model, GPT):
        return model
    if hasattr(model, "encoder") and hasattr(model, "class_token"):
        return ViTStack(model)
    raise TypeError(f"{type(model).__name__} is not a block stack (GPT or torchvision ViT)")


# --------------------------------------------------------------------------- building
def build_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """The model of ``spec`` on the CPU in float32, initialised from ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.arch == "gpt":
            return GPT(spec.classes, spec.input_size, spec.depth, spec.width, spec.heads)
        from torchvision import models as tvm  # only vision models pay for the import

        if spec.arch in ("vit", "vit_b_16"):
            if spec.arch == "vit":
                vit = tvm.VisionTransformer(
                    image_size=spec.input_size, patch_size=spec.patch, num_layers=spec.depth,
                    num_heads=spec.heads, hidden_dim=spec.width, mlp_dim=4 * spec.width, num_classes=spec.classes,
                )
            else:
                vit = tvm.vit_b_16(weights=None, image_size=spec.input_size, num_classes=spec.classes)
            # torchvision zero-initialises the classifier (for fine-tuning): outputs would be
            # identically zero and an error against float64 undefined, so draw it instead.
            nn.init.trunc_normal_(vit.heads.head.weight, std=0.02)
            return vit
        if spec.arch == "resnet50":
            return tvm.resnet50(weights=None, num_classes=spec.classes)
        return tvm.efficientnet_b0(weights=None, num_classes=spec.classes, dropout=0.0, stochastic_depth_prob=0.0)


def make_batches(spec: ModelSpec, count: int, seed: int = 0, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` seeded (inputs, targets) batches of ``spec.batch`` samples.

    Vision: float32 images (batch, 3, side, side) and integer labels. GPT: token ids
    (batch, length) and the next tokens as targets. The data-generating process (prototypes,
    bigram table) depends on ``seed`` only, so batches of different sizes come from one task.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    if spec.is_vision:
        side = spec.input_size
        coarse = torch.randn(spec.classes, 3, 4, 4, generator=gen)
        prototypes = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
        for i in range(count):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i + 1)
            labels = torch.randint(spec.classes, (spec.batch,), generator=g)
            images = prototypes[labels] + 0.5 * torch.randn(spec.batch, 3, side, side, generator=g)
            out.append((images.to(device), labels.to(device)))
        return out
    vocab, successors = spec.classes, 4
    table = torch.randint(vocab, (vocab, successors), generator=gen)
    weights = torch.tensor([0.55, 0.25, 0.15, 0.05])
    for i in range(count):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i + 1)
        seq = torch.empty(spec.batch, spec.input_size + 1, dtype=torch.long)
        seq[:, 0] = torch.randint(vocab, (spec.batch,), generator=g)
        picks = torch.multinomial(weights, spec.batch * spec.input_size, replacement=True, generator=g)
        picks = picks.view(spec.batch, spec.input_size)
        for t in range(spec.input_size):
            seq[:, t + 1] = table[seq[:, t], picks[:, t]]
        out.append((seq[:, :-1].contiguous().to(device), seq[:, 1:].contiguous().to(device)))
    return out


def gpt_forward_flops(spec: ModelSpec) -> float:
    """Matmul FLOPs of one forward of the GPT stack on ``spec.batch`` sequences of ``input_size``.

    Per block: the qkv, output and MLP projections 2*T*(3d^2 + d^2 + 8d^2) = 24*T*d^2, and the
    attention scores and weighted sum 4*T^2*d, halved because causal attention computes only
    the lower triangle; the tied head 2*T*d*V. Embedding lookups, norms and pointwise ops are
    not counted (as FlopCounterMode does not). FlopCounterMode itself counts causal SDPA as
    full attention on CUDA and as nothing on the CPU, so GPT FLOPs come from this formula.
    """
    if spec.arch != "gpt":
        raise ValueError(f"the GPT FLOP formula does not apply to {spec.arch!r}")
    t, d, depth, vocab = spec.input_size, spec.width, spec.depth, spec.classes
    per_block = 24.0 * t * d * d + 4.0 * t * t * d / 2.0
    return spec.batch * (depth * per_block + 2.0 * t * d * vocab)


def gpt_training_flops(spec: ModelSpec) -> float:
    """Forward plus backward: each matmul's backward is two matmuls of its size, so 3x the forward."""
    return 3.0 * gpt_forward_flops(spec)


def loss_fn(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in float32 for classification logits (B, C) or token logits (B, T, V)."""
    return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), targets.reshape(-1))

