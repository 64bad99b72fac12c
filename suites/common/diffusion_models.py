"""Denoisers for the diffusion suite: an exact one for a Gaussian mixture, a UNet trained on the
scikit-learn digits, a local pretrained diffusers UNet; and the small digits classifier whose
features give a Frechet distance where Inception weights are absent.

Every denoiser is an epsilon-prediction model ``eps = model(x_t, t)`` for the forward process
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` of a diffusers training schedule, so one
sampling loop drives any of them with any diffusers scheduler. Flow-matching models predict the
velocity ``v = model(x_s, s T) = eps - x_0`` on the straight path ``x_s = (1 - s) x_0 + s eps``
(diffusers' ``FlowMatchEulerDiscreteScheduler`` convention): the exact one of the mixture
(:class:`GMMVelocity`) and a UNet trained on the digits with that objective.

Trained weights are cached under ``harness.paths.cache_dir("diffusion")`` in a folder named by
the hash of the training config, with a manifest holding each file's SHA-256: a later run reuses
them, and a cache whose files are missing, altered or unreadable is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import artifacts
from harness.artifacts import MANIFEST, config_key, sha256_file, verify_artifact  # noqa: F401 - public here too
from harness.paths import cache_dir

# The schedule of DDPM (Ho et al. 2020) and of most pixel-space checkpoints (e.g. CIFAR-10 DDPM).
TRAINING_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
}


def alphas_cumprod(schedule: dict | None = None) -> torch.Tensor:
    """abar_t of a diffusers training schedule (float64), t = 0 .. T-1."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{**TRAINING_SCHEDULE, **(schedule or {})})
    return sched.alphas_cumprod.to(torch.float64)


# --------------------------------------------------------------------------- Gaussian mixture
@dataclass
class GaussianMixture:
    """A mixture of full-covariance Gaussians, covariances stored as eigen-decompositions."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D)
    eigvecs: torch.Tensor  # (K, D, D), columns are eigenvectors
    eigvals: torch.Tensor  # (K, D)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def covariances(self) -> torch.Tensor:
        return self.eigvecs @ torch.diag_embed(self.eigvals) @ self.eigvecs.transpose(-1, -2)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of the whole mixture (float64)."""
        w = self.weights.to(torch.float64)
        mu_k = self.means.to(torch.float64)
        mean = (w[:, None] * mu_k).sum(0)
        second = (w[:, None, None] * (self.covariances().to(torch.float64) + mu_k[:, :, None] * mu_k[:, None, :])).sum(0)
        return mean, second - mean[:, None] * mean[None, :]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws (float64, on the CPU) from a seeded generator."""
        comp = torch.multinomial(self.weights.to(torch.float64).cpu(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        vecs, vals = self.eigvecs.to(torch.float64).cpu(), self.eigvals.to(torch.float64).cpu()
        return self.means.to(torch.float64).cpu()[comp] + torch.einsum("nde,ne->nd", vecs[comp], z * vals[comp].sqrt())

    def to(self, device, dtype=None) -> "GaussianMixture":
        return GaussianMixture(*(t.to(device=device, dtype=dtype or t.dtype) for t in
                                 (self.weights, self.means, self.eigvecs, self.eigvals)))


def make_gmm(dim: int = 16, components: int = 4, seed: int = 0, spread: float = 1.0,
             var_range: tuple[float, float] = (1e-4, 1e-2)) -> GaussianMixture:
    """A seeded mixture: means ~ N(0, spread^2 I), random rotations, log-uniform variances.

    Small per-component variances make the data lie close to a few thin ellipsoids, as images lie
    close to a low-dimensional set; that is what makes coarse samplers miss.
    """
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(components, generator=g, dtype=torch.float64) + 0.5
    weights = weights / weights.sum()
    means = spread * torch.randn(components, dim, generator=g, dtype=torch.float64)
    vecs = torch.linalg.qr(torch.randn(components, dim, dim, generator=g, dtype=torch.float64))[0]
    lo, hi = math.log(var_range[0]), math.log(var_range[1])
    vals = torch.exp(lo + (hi - lo) * torch.rand(components, dim, generator=g, dtype=torch.float64))
    return GaussianMixture(weights, means, vecs, vals)


class GMMDenoiser(nn.Module):
    """The exact epsilon-prediction of data drawn from a known Gaussian mixture.

    Under ``x_t = a x_0 + s eps`` (a = sqrt(abar_t), s^2 = 1 - abar_t) each component k gives
    ``x_t | k ~ N(a mu_k, a^2 S_k + s^2 I)``, so the posterior mean is
    ``E[x_0 | x_t] = sum_k p(k | x_t) (mu_k + a S_k (a^2 S_k + s^2 I)^-1 (x_t - a mu_k))`` and the
    returned ``eps = (x_t - a E[x_0 | x_t]) / s`` is the minimiser of the training loss: a
    sampler's error on it is the sampler's alone. Non-integer ``t`` (Euler's interpolated
    timesteps) use sigma = sqrt((1 - abar) / abar) interpolated linearly in t, as diffusers does.
    """

    def __init__(self, gmm: GaussianMixture, abar: torch.Tensor | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        abar = alphas_cumprod() if abar is None else abar.to(torch.float64)
        self.compute_dtype = dtype
        self.register_buffer("log_weights", gmm.weights.to(torch.float64).log().to(dtype))
        self.register_buffer("means", gmm.means.to(dtype))
        self.register_buffer("eigvecs", gmm.eigvecs.to(dtype))
        self.register_buffer("eigvals", gmm.eigvals.to(torch.float64))
        self.register_buffer("sigmas", ((1 - abar) / abar).sqrt())
        self.dim = gmm.dim
        self._per_level: dict[float, tuple] = {}  # noise level -> constants of that level

    def _apply(self, fn, *args, **kwargs):
        self._per_level = {}  # constants follow the buffers to a new device
        return super()._apply(fn, *args, **kwargs)

    def abar_at(self, t) -> float:
        """abar at timestep ``t`` (integer: the schedule's value; between: sigma interpolated in t)."""
        t = float(t)
        n = len(self.sigmas)
        lo = min(max(math.floor(t), 0), n - 1)
        hi, frac = min(lo + 1, n - 1), t - lo
        sigma = float(self.sigmas[lo]) * (1 - frac) + float(self.sigmas[hi]) * frac
        return 1.0 / (1.0 + sigma * sigma)

    def _level(self, abar: float) -> tuple:
        """Per-noise-level constants, computed in float64 once and cached (samplers revisit levels)."""
        if abar not in self._per_level:
            a = math.sqrt(abar)
            ev = abar * self.eigvals + (1 - abar)  # (K, D): eigenvalues of a^2 S_k + s^2 I
            dt = self.compute_dtype
            self._per_level[abar] = (
                (a * self.means).unsqueeze(1),  # (K, 1, D)
                (-0.5 / ev).to(dt).unsqueeze(1),  # (K, 1, D)
                (self.log_weights - 0.5 * ev.log().sum(-1).to(dt)).unsqueeze(1),  # (K, 1)
                (a * self.eigvals / ev).to(dt).unsqueeze(1),  # (K, 1, D): a S_k (a^2 S_k + s^2 I)^-1
            )
        return self._per_level[abar]

    def posterior_mean(self, x: torch.Tensor, abar: float) -> torch.Tensor:
        """E[x_0 | x_t = x] for rows x of shape (B, D) at noise level ``abar``."""
        scaled_means, neg_half_inv, log_norm, shrink = self._level(float(abar))
        z = torch.matmul(x.to(self.compute_dtype).unsqueeze(0) - scaled_means, self.eigvecs)  # (K, B, D)
        resp = torch.softmax(((z * z) * neg_half_inv).sum(-1) + log_norm, dim=0)  # p(k | x_t), (K, B)
        cond_mean = self.means.unsqueeze(1) + torch.matmul(z * shrink, self.eigvecs.transpose(1, 2))
        return (resp.unsqueeze(-1) * cond_mean).sum(0)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(shape[0], -1).to(self.compute_dtype)
        abar = self.abar_at(t)
        x0 = self.posterior_mean(flat, abar)
        eps = (flat - math.sqrt(abar) * x0) * (1.0 / math.sqrt(1 - abar))
        return eps.to(dtype).reshape(shape)


class GMMVelocity(nn.Module):
    """The exact flow-matching velocity of data drawn from a known Gaussian mixture.

    diffusers' flow-matching convention (``FlowMatchEulerDiscreteScheduler.scale_noise``): the
    straight path ``x_s = (1 - s) x_0 + s eps`` from data (s = 0) to noise (s = 1), timestep
    ``t = s T``, the model predicts ``v = dx_s/ds = eps - x_0`` and the Euler step is
    ``x + (s_next - s) v``. The minimiser of the flow-matching loss is the conditional expectation
    ``v(x, s) = E[eps - x_0 | x_s = x] = (x - E[x_0 | x_s = x]) / s``. Dividing the path by
    ``c = sqrt((1 - s)^2 + s^2)`` makes it a variance-preserving one with
    ``abar = (1 - s)^2 / c^2``, so the posterior mean is :class:`GMMDenoiser`'s at that level:
    the mixture algebra is written once.
    """

    def __init__(self, gmm: GaussianMixture, num_train_timesteps: int = 1000, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.denoiser = GMMDenoiser(gmm, dtype=dtype)
        self.num_train_timesteps = num_train_timesteps
        self.dim = gmm.dim

    @staticmethod
    def path_level(s: float) -> tuple[float, float]:
        """``(c, abar)`` of the straight path at ``s``: x_s / c is x_0 noised to level abar."""
        c = math.sqrt((1 - s) ** 2 + s * s)
        return c, ((1 - s) / c) ** 2

    def posterior_mean(self, x: torch.Tensor, s: float) -> torch.Tensor:
        """E[x_0 | x_s = x] for rows x of shape (B, D) on the straight path at ``s`` in (0, 1]."""
        c, abar = self.path_level(float(s))
        return self.denoiser.posterior_mean(x / c, abar)

    def velocity(self, x: torch.Tensor, s: float) -> torch.Tensor:
        """v(x, s) = E[eps - x_0 | x_s = x] for rows x of shape (B, D), ``s`` in (0, 1]."""
        s = float(s)
        if not 0.0 < s <= 1.0:
            raise ValueError(f"the velocity is defined for s in (0, 1], got {s}")
        flat = x.to(self.denoiser.compute_dtype)
        return (flat - self.posterior_mean(flat, s)) * (1.0 / s)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        v = self.velocity(x.reshape(shape[0], -1), float(t) / self.num_train_timesteps)
        return v.to(dtype).reshape(shape)


# --------------------------------------------------------------------------- on-disk cache
verify_cache = verify_artifact  # the facility lives in harness.artifacts; these names stay for callers
_sha256 = sha256_file


def cached_artifact(kind: str, config: Any, build: Callable[[Path], dict], load: Callable[[Path], Any]):
    """Load the artifact cached for ``config`` under ``cache_dir("diffusion")``, building (and
    caching) it when absent or corrupt: :func:`harness.artifacts.cached_artifact` there.

    ``build(folder)`` writes the artifact's files into an empty folder and returns facts worth
    keeping (e.g. training loss); ``load(folder)`` reads it back. Returns ``(artifact, info)``;
    ``info["cache"]`` says whether the cache was reused, built, or rebuilt and why.
    """
    return artifacts.cached_artifact(kind, config, build, load, root=cache_dir("diffusion"))


# --------------------------------------------------------------------------- digits data
def digits_images() -> torch.Tensor:
    """scikit-learn's 1797 handwritten digits as (N, 1, 8, 8) float32 images in [-1, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32)) / 16.0
    return (x * 2 - 1).unsqueeze(1)


def digits_labels() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().target.astype(np.int64))


def digits_split(test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices into :func:`digits_images`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(digits_labels()))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=digits_labels().numpy())
    return np.sort(train), np.sort(test)


# --------------------------------------------------------------------------- digits UNet
@dataclass(frozen=True)
class DigitsUNetConfig:
    """Architecture and training of the digits UNet; its hash names the cache folder."""

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 2
    attention: bool = True
    norm_num_groups: int = 8
    train_steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def build_digits_unet(config: DigitsUNetConfig):
    from diffusers import UNet2DModel

    n = len(config.block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if config.attention and n > 1:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=config.norm_num_groups,
    )


OBJECTIVES = ("epsilon", "flow")  # what a digits UNet is trained to predict


def _training_pair(objective: str, x0: torch.Tensor, abar: torch.Tensor,
                   g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch's (noised input, timestep, regression target) for ``objective``.

    ``epsilon``: DDPM's x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, integer t, target eps.
    ``flow``: the straight path x_s = (1 - s) x_0 + s eps with s ~ U[0, 1) (rectified flow), the
    timestep s T that diffusers' flow-matching scheduler passes, target the velocity eps - x_0.
    """
    n, device = len(x0), x0.device
    if objective == "epsilon":
        t = torch.randint(0, len(abar), (n,), generator=g).to(device)
        eps = torch.randn(x0.shape, generator=g).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps, t, eps
    if objective == "flow":
        s = torch.rand(n, generator=g).to(device)
        eps = torch.randn(x0.shape, generator=g).to(device)
        sv = s.view(-1, 1, 1, 1)
        return (1 - sv) * x0 + sv * eps, s * len(abar), eps - x0
    raise ValueError(f"unknown training objective {objective!r} (use {' or '.join(OBJECTIVES)})")


def train_digits_unet(config: DigitsUNetConfig, device: str = "cpu", objective: str = "epsilon"):
    """Train on all 1797 digits, DDPM epsilon-prediction or flow matching; returns (model, facts)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown training objective {objective!r} (use {' or '.join(OBJECTIVES)})")
    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    model = build_digits_unet(config).to(device).train()
    data = digits_images().to(device)
    abar = alphas_cumprod().to(device=device, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(config.train_steps, 1),
                                                pct_start=0.05)
    losses = []
    for _ in range(config.train_steps):
        idx = torch.randint(0, len(data), (config.batch_size,), generator=g).to(device)
        x0 = data[idx]
        xt, t, target = _training_pair(objective, x0, abar, g)
        loss = F.mse_loss(model(xt, t).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10):]
    return model.eval(), {"final_loss": float(np.mean(tail)) if tail else math.nan,
                          "train_steps": config.train_steps, "trained_on": device, "objective": objective}


def digits_unet(config: DigitsUNetConfig | None = None, device: str = "cpu", objective: str = "epsilon"):
    """The digits UNet for ``config`` and ``objective``: from the cache, or trained once and cached.

    The epsilon and flow models share the architecture and training config; the cache keeps them
    apart by kind (``digits-unet``, ``digits-flow-unet``). Returns (model, info).
    """
    from diffusers import UNet2DModel

    config = config or DigitsUNetConfig()
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown training objective {objective!r} (use {' or '.join(OBJECTIVES)})")

    def build(folder: Path) -> dict:
        model, facts = train_digits_unet(config, device, objective)
        model.save_pretrained(folder, safe_serialization=True)
        return facts

    def load(folder: Path):
        return UNet2DModel.from_pretrained(folder, local_files_only=True)

    kind = "digits-unet" if objective == "epsilon" else "digits-flow-unet"
    model, info = cached_artifact(kind, config, build, load)
    return model.to(device).eval(), info


# --------------------------------------------------------------------------- digits classifier
@dataclass(frozen=True)
class DigitsClassifierConfig:
    """The small CNN whose penultimate features stand in for Inception's on the digits."""

    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 64
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


class DigitsClassifier(nn.Module):
    """conv-conv-pool-fc CNN for 8x8 digits; ``features`` is the layer the Frechet distance uses."""

    def __init__(self, config: DigitsClassifierConfig):
        super().__init__()
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 16, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_digits_classifier(config: DigitsClassifierConfig, device: str = "cpu"):
    """Train on the digits' training split; returns (model, facts with held-out accuracy)."""
    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    train, test = digits_split()
    x, y = digits_images().to(device), digits_labels().to(device)
    model = DigitsClassifier(config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_t = torch.from_numpy(train)
    for _ in range(config.epochs):
        order = train_t[torch.randperm(len(train_t), generator=g)]
        for i in range(0, len(order), config.batch_size):
            idx = order[i: i + config.batch_size].to(device)
            xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=g).to(device)  # mild noise robustness
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        test_t = torch.from_numpy(test).to(device)
        acc = float((model(x[test_t]).argmax(1) == y[test_t]).float().mean())
    return model, {"test_accuracy": acc, "n_train": int(len(train)), "n_test": int(len(test))}


def digits_classifier(config: DigitsClassifierConfig | None = None, device: str = "cpu"):
    """The digits classifier for ``config``: from the cache, or trained once and cached."""
    config = config or DigitsClassifierConfig()

    def build(folder: Path) -> dict:
        model, facts = train_digits_classifier(config, device)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "classifier.pt")
        return facts

    def load(folder: Path):
        model = DigitsClassifier(config)
        model.load_state_dict(torch.load(folder / "classifier.pt", map_location="cpu", weights_only=True))
        return model

    model, info = cached_artifact("digits-classifier", config, build, load)
    return model.to(device).eval(), info


@torch.no_grad()
def classifier_features(model: DigitsClassifier, images: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """Penultimate features of (N, 1, 8, 8) images in [-1, 1] (values outside are clamped)."""
    device = next(model.parameters()).device
    out = [model.features(images[i: i + batch].to(device, torch.float32).clamp(-1, 1)).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out)


# --------------------------------------------------------------------------- local pretrained
def load_pretrained(path: str | os.PathLike, device: str = "cpu"):
    """A diffusers UNet2DModel and its training schedule from a local folder, never the network.

    ``path`` is a pipeline folder (``unet/`` and ``scheduler/`` inside, as ``DDPMPipeline``'s
    ``save_pretrained`` writes) or a bare model folder (``config.json`` and weights). The schedule
    is read from ``scheduler/scheduler_config.json`` where present, else DDPM's linear one.
    Returns ``(unet, schedule, info)``.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no pretrained model folder at {root}")
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"{root} holds neither unet/config.json nor config.json")
    unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True).to(device).eval()
    schedule = dict(TRAINING_SCHEDULE)
    source = "default linear schedule"
    sched_dir = root / "scheduler"
    if (sched_dir / "scheduler_config.json").is_file():
        cfg = DDPMScheduler.load_config(sched_dir, local_files_only=True)
        for key in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas",
                    "prediction_type"):
            if cfg.get(key) is not None:
                schedule[key] = cfg[key]
        source = str(sched_dir / "scheduler_config.json")
    info = {"model_path": str(unet_dir), "schedule_from": source,
            "parameters": sum(p.numel() for p in unet.parameters())}
    return unet, schedule, info
