"""Diffusion samplers: DDPM against DDIM, DPM-Solver++, Euler and flow matching for speed and quality.

Question: how many sampling steps of which sampler give what sample quality, for how many
milliseconds and how much memory, on this device? The shape of the answer is the DDIM paper's
Table 1 (Song et al. 2021): DDIM (eta 0) at 20-50 steps comes close to 1000-step DDPM at a
fraction of the time, while stochastic sampling (eta 1, or DDPM's larger variance) with few
steps is much worse. Flow matching on the straight path (rectified flow, Liu et al. 2023; SD3,
Esser et al. 2024) is a deterministic ODE sampler too: at equal steps it should land near DDIM,
its straighter path helping most at few steps. ``harness export RUN_DIR --suite diffusion
--pivot steps`` puts the samplers side by side at equal steps (``--layout suite``: each row a
sampler's quality and the milliseconds per image it cost).

Samplers are diffusers' schedulers, all driven by one loop (:func:`sample_loop`):
- ``ddpm`` (the reference): ``DDPMScheduler``, ancestral sampling over all 1000 steps.
- ``ddim``: ``DDIMScheduler`` with variant params ``steps``, ``eta`` (0: deterministic DDIM,
  1: DDPM's posterior variance on the strided chain) and ``spacing``.
- ``ddpm_strided``: ``DDPMScheduler`` on a strided chain with the large variance
  1 - abar_t / abar_prev (the sigma-hat row of the DDIM paper's Table 1).
- ``dpm_solver``: ``DPMSolverMultistepScheduler``, DPM-Solver++ (2M).
- ``euler``: ``EulerDiscreteScheduler`` (Karras et al.'s Euler step, no churn).
- ``flow_euler``: ``FlowMatchEulerDiscreteScheduler`` (SD3's), Euler steps on the velocity of
  the path x_s = (1 - s) x_0 + s eps, with variant params ``steps`` and ``shift`` (sigmas
  linear in (0, 1], then s' = shift s / (1 + (shift - 1) s): 1 is rectified flow's uniform
  grid, 3 is SD3's, which spends more steps at high noise). It starts from the same noise as
  the other samplers. Its model is the source's velocity model: the exact velocity of the
  ``gmm`` mixture, or a UNet trained with the flow-matching objective on ``digits``.
``spacing`` picks the timesteps: diffusers' ``leading``, ``trailing`` and ``linspace``, or
``quadratic``, the DDIM paper's CIFAR-10 choice t_i = floor((i sqrt(0.8 T) / (S-1))^2), passed
as custom timesteps. Every variant at one grid point starts from the same noise and draws its
per-step noise from the same seeds. No scheduler clips its x_0 prediction (not all can), so all
are compared alike; image samples are clamped to [-1, 1] before their metrics. With ``trailing``
spacing the chain never visits t = 0, so ``ddpm_strided``'s last step adds noise of variance
1 - abar_t (diffusers' ``fixed_large``), which its distance shows.

Model sources (grid param ``source``):
- ``gmm``: the exact denoiser of a known 16-dimensional Gaussian mixture, so sampler error is
  measured with no training and no model error. Quality: the Frechet distance in data space to
  the mixture's true mean and covariance (``fd_data_true``) and to as many fresh draws from the
  mixture (``fd_data_sample``, the estimator FID uses, with its small-sample bias). The mixture's
  components are thin (variances 1e-4 to 1e-2 in 16 dimensions), so coarse stochastic steps
  leave visible excess noise; even at 1000 steps the stochastic samplers' distance sits above the
  deterministic ones', whose ODE maps the shared noise onto the thin components more tightly.
- ``digits``: a diffusers ``UNet2DModel`` trained in the harness on scikit-learn's 8x8 digits
  (cached on disk by training config). Quality: FID/KID against the 1797 digits through
  torch-fidelity when Inception weights are on this machine, else ``fid`` is stored as
  unavailable with the reason; always ``fd_classifier``, the Frechet distance in the feature
  space of a small CNN trained on the digits' training split. ``flow_euler`` uses a second UNet
  of the same architecture and training budget trained to predict the velocity (cached beside
  the first).
- ``pretrained``: a diffusers UNet in the local folder named by ``$HARNESS_DIFFUSION_MODEL``
  (e.g. a CIFAR-10 DDPM checkpoint saved with ``save_pretrained``), loaded from that path only.
  FID/KID against the image folder in ``$HARNESS_FID_REFERENCE``; skipped without the model.
  ``flow_euler`` is skipped (an epsilon-prediction checkpoint has no velocity model).

``fd_inf`` (gmm and digits): the source's Frechet distance (``fd_data_true`` or
``fd_classifier``) extrapolated to infinitely many samples (Chong & Forsyth 2020: the
estimator's bias is linear in 1/N; the distance on random subsets of 10% to 100% of the
samples, a line in 1/N, its intercept), stored with the fit's residual, the intercept's
standard error, the sizes and distances. The small-sample bias then shows in one number:
with 250 samples every sampler's ``fd_data_true`` is dominated by it.

Speed: the engine's ``latency`` is one batch of ``batch`` samples, end to end (it excludes the
scheduler's construction, includes ``set_timesteps``); ``latency_per_image`` is that latency
(median, spread and samples) divided by the batch; ``nfe`` counts network evaluations. On the
CPU the ``gmm`` loop runs on one thread (recorded as ``info.threads``): its tensors are too small
for intra-op threads to help, and on a busy machine they make it many times slower.
FLOPs are not counted (``flops=0``): counting a 1000-step loop costs more than running it.
Quality metrics use ``n_samples`` samples (a grid param, so FID's bias with few samples shows)
and store that count and the reference count with each value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness import Metric, Profile, Skip, Suite, Timing, Workload, variant
from harness.metrics.fid import (
    FidResult, fd_subset_sizes, feature_statistics, fid_kid, frechet_distance, frechet_distance_infinity,
    inception_weights_path,
)

PRETRAINED_ENV = "HARNESS_DIFFUSION_MODEL"
FID_REFERENCE_ENV = "HARNESS_FID_REFERENCE"
GMM = {"dim": 16, "components": 4, "seed": 0, "var_range": (1e-4, 1e-2)}
NOISE_SEED = 1234  # the initial noise and per-step noise of every variant at a grid point
REFERENCE_SEED = 4321  # fresh draws from the true mixture for fd_data_sample
STEPS = [10, 20, 50, 100, 1000]
SPACINGS = ["leading", "trailing", "linspace", "quadratic"]
SHIFTS = [1.0, 3.0]  # flow-matching timestep shift: 1 is rectified flow's uniform grid, 3 is SD3's
DIGITS_UNET = None  # None: DigitsUNetConfig()'s defaults; tests set a tiny config
DIGITS_CLASSIFIER = None  # None: DigitsClassifierConfig()'s defaults


# --------------------------------------------------------------------------- timesteps + schedulers
def quadratic_timesteps(steps: int, num_train_timesteps: int = 1000, top: float = 0.8) -> list[int]:
    """The DDIM paper's quadratic sequence, descending: floor((i * sqrt(top T) / (S-1))^2).

    Where flooring repeats a value (many steps), later entries are pushed up by one so the
    sequence stays strictly increasing and has ``steps`` distinct timesteps.
    """
    if steps < 1 or steps > num_train_timesteps:
        raise Skip(f"quadratic spacing needs 1 <= steps <= {num_train_timesteps}, got {steps}")
    seq = (np.linspace(0, math.sqrt(top * num_train_timesteps), steps) ** 2).astype(np.int64)
    for i in range(1, len(seq)):
        seq[i] = max(seq[i], seq[i - 1] + 1)
    if seq[-1] >= num_train_timesteps:
        raise Skip(f"quadratic spacing cannot place {steps} distinct steps below {num_train_timesteps}")
    return [int(t) for t in seq[::-1]]


def _ddim_class():
    from diffusers import DDIMScheduler

    class SequenceDDIMScheduler(DDIMScheduler):
        """``DDIMScheduler`` that also runs an arbitrary descending timestep sequence.

        diffusers' DDIM step takes the previous timestep to be ``t - T // S``, which is only true
        for uniform strides (``leading``, ``trailing``); on ``linspace`` or custom sequences it
        would read the wrong abar. Here each step runs diffusers' own update with stride 1 on a
        copy of the schedule whose entry ``t - 1`` holds abar of the true previous timestep, so
        the math (clipping, prediction types, eta variance) stays diffusers'.
        """

        def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
            if timesteps is None:
                super().set_timesteps(num_inference_steps, device)
            else:
                seq = np.asarray(timesteps, dtype=np.int64)
                if seq.ndim != 1 or len(seq) == 0 or np.any(np.diff(seq) >= 0) or seq[-1] < 0 \
                        or seq[0] >= self.config.num_train_timesteps:
                    raise ValueError("custom timesteps must be strictly descending within [0, T)")
                self.num_inference_steps = len(seq)
                self.timesteps = torch.from_numpy(seq).to(device)
            seq = self.timesteps.tolist()
            self.previous = dict(zip(seq, seq[1:] + [-1]))
            stride = self.config.num_train_timesteps // self.num_inference_steps
            self.uniform = all(p == t - stride or (p < 0 and t - stride < 0) for t, p in self.previous.items())

        def step(self, model_output, timestep, sample, eta=0.0, generator=None, **kwargs):
            if self.uniform:
                return super().step(model_output, timestep, sample, eta=eta, generator=generator, **kwargs)
            t = int(timestep)
            prev = self.previous[t]
            original, n = self.alphas_cumprod, self.num_inference_steps
            view = original.clone()
            if t > 0:
                view[t - 1] = original[prev] if prev >= 0 else self.final_alpha_cumprod
            try:
                self.alphas_cumprod, self.num_inference_steps = view, self.config.num_train_timesteps
                return super().step(model_output, timestep, sample, eta=eta, generator=generator, **kwargs)
            finally:
                self.alphas_cumprod, self.num_inference_steps = original, n

    return SequenceDDIMScheduler


def make_scheduler(kind: str, schedule: dict, spacing: str = "leading", **options):
    """A diffusers scheduler of ``kind`` on the model's training ``schedule``."""
    from diffusers import (
        DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
    )

    if kind == "flow_euler":  # sigmas s in (0, 1], shifted by ``shift``; no beta schedule, no spacing
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=schedule["num_train_timesteps"], **options)
    base = dict(schedule)
    if spacing != "quadratic":
        base["timestep_spacing"] = spacing
    if kind == "ddpm":
        return DDPMScheduler(**base, clip_sample=False, **options)
    if kind == "ddim":
        return _ddim_class()(**base, clip_sample=False, set_alpha_to_one=True, **options)
    if kind == "dpm_solver":
        return DPMSolverMultistepScheduler(**base, algorithm_type="dpmsolver++", solver_order=2, **options)
    if kind == "euler":
        return EulerDiscreteScheduler(**base, **options)
    raise ValueError(f"unknown scheduler kind {kind!r}")


def set_steps(scheduler, steps: int, spacing: str, device) -> None:
    """``set_timesteps`` by count and spacing; quadratic spacing as custom timesteps."""
    if spacing == "quadratic":
        scheduler.set_timesteps(timesteps=quadratic_timesteps(steps, scheduler.config.num_train_timesteps),
                                device=device)
    else:
        scheduler.set_timesteps(steps, device=device)


def sample_loop(model: Callable, scheduler, noise: torch.Tensor, generator: torch.Generator,
                step_kwargs: dict | None = None) -> tuple[torch.Tensor, int]:
    """The one sampling loop: scale, predict, scheduler step. Returns (x_0, NFE).

    The model predicts what the scheduler steps with: epsilon for the diffusion schedulers, the
    velocity for the flow-matching one (which neither scales its noise nor its model input).
    ``scheduler.set_timesteps`` must have been called (it also resets multistep state).
    """
    step_kwargs = step_kwargs or {}
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    scale = getattr(scheduler, "scale_model_input", None)
    nfe = 0
    with torch.inference_mode():
        for t in scheduler.timesteps:
            pred = model(scale(x, t) if scale is not None else x, t)
            nfe += 1
            x = scheduler.step(pred, t, x, generator=generator, **step_kwargs).prev_sample
    return x, nfe


# --------------------------------------------------------------------------- state + runs
@dataclass
class SourceState:
    """What every variant at one grid point shares: the denoiser, noise, and quality references."""

    source: str
    model: Callable
    schedule: dict
    noise: torch.Tensor  # (n_samples, *sample_shape), the initial noise of every variant
    batch: int
    device: str
    info: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)  # evaluation references (moments, features...)
    cpu_threads: int | None = None  # intra-op threads of the sampling loop on the CPU (None: as set)
    flow_factory: Callable[[], tuple[Callable, dict]] | None = None  # builds (velocity model, info) on first use
    flow_missing: str = "this source has no flow-matching model"
    _flow: tuple[Callable, dict] | None = None

    def flow_model(self) -> tuple[Callable, dict]:
        """The source's flow-matching velocity model and its facts; Skip where there is none."""
        if self.flow_factory is None:
            raise Skip(self.flow_missing)
        if self._flow is None:
            self._flow = self.flow_factory()
        return self._flow


class SamplerRun:
    """One sampler on one state: the timed call (one batch) and the samples quality needs."""

    def __init__(self, state: SourceState, scheduler, steps: int, spacing: str, step_kwargs: dict,
                 model: Callable | None = None):
        self.state, self.scheduler, self.steps, self.spacing = state, scheduler, steps, spacing
        self.step_kwargs = step_kwargs
        self.model = model if model is not None else state.model
        self.nfe = 0
        self._last: torch.Tensor | None = None
        set_steps(scheduler, steps, spacing, state.device)  # validates the sequence before timing

    def sample_batch(self, index: int) -> torch.Tensor:
        st = self.state
        noise = st.noise[index * st.batch:(index + 1) * st.batch]
        gen = torch.Generator(device=st.device).manual_seed(NOISE_SEED + 1 + index)
        threads = torch.get_num_threads()
        if st.cpu_threads and st.device == "cpu":
            torch.set_num_threads(st.cpu_threads)
        try:
            set_steps(self.scheduler, self.steps, self.spacing, st.device)
            x, self.nfe = sample_loop(self.model, self.scheduler, noise, gen, self.step_kwargs)
        finally:
            torch.set_num_threads(threads)
        return x

    def __call__(self) -> torch.Tensor:
        x = self.sample_batch(0)
        self._last = x
        return x

    def samples(self) -> "Samples":
        """All ``n_samples`` samples: the last timed batch (deterministic) plus further batches."""
        st = self.state
        first = self._last if self._last is not None else self.sample_batch(0)
        parts = [first]
        for i in range(1, math.ceil(len(st.noise) / st.batch)):
            parts.append(self.sample_batch(i))
        return Samples(torch.cat(parts)[: len(st.noise)], self.nfe, st.batch)


@dataclass
class Samples:
    """The output quality metrics see: samples, the NFE of one batch, and the batch size."""

    x: torch.Tensor
    nfe: int
    batch: int


# --------------------------------------------------------------------------- the suite
class Diffusion(Suite):
    """DDPM vs DDIM vs DPM-Solver++ vs Euler: latency, memory and sample quality per step count."""

    name = "diffusion"
    description = "diffusion samplers (diffusers schedulers): steps vs time vs sample quality"
    grid = {
        "source": ["gmm", "digits"],
        "n_samples": [1000, 5000],
        "batch": [1000],
    }
    profiles = {
        "quick": Profile(
            grid={"source": ["gmm"], "n_samples": [250, 2000], "batch": [2000], "steps": [10, 20, 50],
                  "eta": [0.0, 1.0], "spacing": ["leading"], "shift": [3.0]},
            timing=Timing(warmup_s=0, min_warmup=1, budget_s=0.2, min_runs=2, rel_spread=0.05),
            description="2 CPU cores in about a minute: the exact GMM denoiser, 10-50 steps against DDPM-1000",
        ),
        "default": Profile(
            grid={"n_samples": [1000], "batch": [500], "steps": [10, 20, 50, 100], "eta": [0.0, 1.0],
                  "spacing": SPACINGS},
            description="both local sources (digits is GPU-sized), every spacing, up to 100 steps against DDPM-1000",
        ),
        "nightly": Profile(
            grid={"source": ["gmm", "digits", "pretrained"], "n_samples": [1000, 10000], "batch": [1000],
                  "steps": STEPS, "eta": [0.0, 0.2, 0.5, 1.0], "spacing": ["leading", "quadratic"]},
            timing=Timing(warmup_s=0, min_warmup=1, budget_s=2.0, min_runs=3, rel_spread=0.02),
            description="the GPU sweep: the DDIM paper's Table 1 (steps x eta) on both spacings it used, "
                        "1k and 10k samples; pretrained runs where $HARNESS_DIFFUSION_MODEL is set",
        ),
    }
    reference = "ddpm"
    metrics = [
        Metric("latency_per_image", "ms", "lower", "latency of one batch divided by the batch size", kind="time"),
        Metric("nfe", "", "lower", "network evaluations per sample", ratio=False, kind="count"),
        Metric("fd_data_true", "", "lower",
               "gmm: Frechet distance in data space between the samples and the mixture's true mean and covariance"),
        Metric("fd_data_sample", "", "lower",
               "gmm: Frechet distance in data space to as many fresh draws from the true mixture"),
        Metric("fd_classifier", "", "lower",
               "digits: Frechet distance in the feature space of a small CNN trained on the digits (not Inception)"),
        Metric("fd_inf", "", "lower",
               "the source's Frechet distance (gmm: fd_data_true, digits: fd_classifier) extrapolated to infinitely "
               "many samples: intercept of a line in 1/N over subsets (Chong & Forsyth 2020), with its fit residual",
               ratio=False),  # an intercept near zero (and possibly below it) makes ratios meaningless
        Metric("fid", "", "lower", "FID with torch-fidelity's Inception-v3 (unavailable without local weights)"),
        Metric("kid", "", "lower", "KID with torch-fidelity's Inception-v3 (unavailable without local weights)"),
    ]
    timing = Timing(warmup_s=0, min_warmup=1, budget_s=1.0, min_runs=2, rel_spread=0.02)

    # ---------------------------------------------------------------- inputs
    def prepare(self, params, device) -> SourceState:
        source, n, batch = params["source"], int(params["n_samples"]), int(params["batch"])
        if n < 2 or batch < 1:
            raise Skip("n_samples must be at least 2 and batch at least 1")
        batch = min(batch, n)
        flow_factory, flow_missing = None, "this source has no flow-matching model"
        if source == "gmm":
            model, schedule, shape, info, ref = self._gmm(n, device)
            flow_factory = lambda: self._gmm_velocity(schedule, device)  # noqa: E731
        elif source == "digits":
            model, schedule, shape, info, ref = self._digits(device)
            flow_factory = lambda: self._digits_flow(device)  # noqa: E731
        elif source == "pretrained":
            model, schedule, shape, info, ref = self._pretrained(device)
            flow_missing = "the pretrained source is an epsilon-prediction UNet; flow matching needs a velocity model"
        else:
            raise Skip(f"unknown source {source!r} (use gmm, digits or pretrained)")
        gen = torch.Generator().manual_seed(NOISE_SEED)
        noise = torch.randn(n, *shape, generator=gen).to(device)
        # The GMM denoiser's tensors are tiny: intra-op threads only add synchronisation (and on a
        # busy machine make the loop many times slower), so its loop runs on one thread.
        threads = 1 if source == "gmm" and device == "cpu" else None
        if threads:
            info["threads"] = threads
        return SourceState(source, model, schedule, noise, batch, device, info, ref, threads,
                           flow_factory=flow_factory, flow_missing=flow_missing)

    def _gmm(self, n: int, device: str):
        from suites.common.diffusion_models import TRAINING_SCHEDULE, GMMDenoiser, alphas_cumprod, make_gmm

        gmm = make_gmm(**GMM)
        model = GMMDenoiser(gmm, alphas_cumprod(TRAINING_SCHEDULE)).to(device)
        mean, cov = gmm.moments()
        draws = gmm.sample(n, torch.Generator().manual_seed(REFERENCE_SEED))
        info = {"gmm": dict(GMM), "fid": "not applicable: gmm samples are vectors, not images"}
        return model, dict(TRAINING_SCHEDULE), (gmm.dim,), info, {"mean": mean, "cov": cov, "draws": draws}

    def _gmm_velocity(self, schedule: dict, device: str):
        from suites.common.diffusion_models import GMMVelocity, make_gmm

        model = GMMVelocity(make_gmm(**GMM), schedule["num_train_timesteps"]).to(device)
        return model, {"velocity": "exact: E[eps - x_0 | x_s] of the mixture"}

    def _digits_flow(self, device: str):
        from suites.common.diffusion_models import digits_unet

        unet, info = digits_unet(DIGITS_UNET, device=device, objective="flow")
        return _unet_fn(unet), {"flow_unet": info}

    def _digits(self, device: str):
        from suites.common.diffusion_models import (
            TRAINING_SCHEDULE, classifier_features, digits_classifier, digits_images, digits_unet,
        )

        unet, unet_info = digits_unet(DIGITS_UNET, device=device)
        clf, clf_info = digits_classifier(DIGITS_CLASSIFIER, device=device)
        real = digits_images()
        ref = {"images": real, "features": feature_statistics(classifier_features(clf, real)), "classifier": clf}
        info = {"unet": unet_info, "classifier": clf_info, "reference": "the 1797 scikit-learn digits"}
        return _unet_fn(unet), dict(TRAINING_SCHEDULE), (1, 8, 8), info, ref

    def _pretrained(self, device: str):
        from suites.common.diffusion_models import load_pretrained

        path = os.environ.get(PRETRAINED_ENV)
        if not path:
            raise Skip(f"no pretrained model: set ${PRETRAINED_ENV} to a local diffusers model folder")
        if not Path(path).expanduser().is_dir():
            raise Skip(f"${PRETRAINED_ENV} names {path}, which is not a folder")
        unet, schedule, info = load_pretrained(path, device)
        cfg = unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size,) * 2
        ref_dir = os.environ.get(FID_REFERENCE_ENV)
        ref = {"images": ref_dir} if ref_dir and Path(ref_dir).is_dir() else {}
        info["reference"] = ref_dir or f"none: set ${FID_REFERENCE_ENV} to a folder of reference images"
        return _unet_fn(unet), schedule, (cfg.in_channels, *size), info, ref

    # ---------------------------------------------------------------- variants
    def _workload(self, state: SourceState, params, kind: str, steps: int, spacing: str,
                  step_kwargs: dict | None = None, model: Callable | None = None, **options) -> Workload:
        scheduler = make_scheduler(kind, state.schedule, spacing, **options)
        run = SamplerRun(state, scheduler, steps, spacing, step_kwargs or {}, model)
        info = {"scheduler": type(scheduler).__name__, "timesteps": len(scheduler.timesteps),
                "spacing": spacing, **{k: v for k, v in state.info.items()}}
        return Workload(run, flops=0, items=state.batch, items_unit="images/s", output=run.samples,
                        per_item_latency="latency_per_image", metrics={"nfe": len(scheduler.timesteps)},
                        info=info)

    @variant()
    def ddpm(self, state, params):
        """DDPM ancestral sampling over all 1000 training steps (the reference)"""
        return self._workload(state, params, "ddpm", state.schedule["num_train_timesteps"], "leading",
                              variance_type="fixed_small")

    @variant(params={"steps": STEPS, "eta": [0.0, 1.0], "spacing": SPACINGS})
    def ddim(self, state, params):
        """DDIM on a strided chain; eta 0 is deterministic, eta 1 adds DDPM's posterior noise"""
        return self._workload(state, params, "ddim", params["steps"], params["spacing"],
                              step_kwargs={"eta": float(params["eta"])})

    @variant(params={"steps": STEPS, "spacing": SPACINGS})
    def ddpm_strided(self, state, params):
        """DDPM on a strided chain with the large variance 1 - abar_t/abar_prev (DDIM paper's sigma-hat)"""
        return self._workload(state, params, "ddpm", params["steps"], params["spacing"], variance_type="fixed_large")

    @variant(params={"steps": STEPS, "spacing": SPACINGS})
    def dpm_solver(self, state, params):
        """DPM-Solver++ (2M) multistep"""
        return self._workload(state, params, "dpm_solver", params["steps"], params["spacing"])

    @variant(params={"steps": STEPS, "spacing": SPACINGS})
    def euler(self, state, params):
        """Euler discrete (probability-flow ODE in sigma), no churn"""
        return self._workload(state, params, "euler", params["steps"], params["spacing"])

    @variant(params={"steps": STEPS, "shift": SHIFTS})
    def flow_euler(self, state, params):
        """flow matching: Euler on the velocity field, diffusers' FlowMatchEulerDiscreteScheduler (SD3's)"""
        model, flow_info = state.flow_model()
        shift = float(params["shift"])
        workload = self._workload(state, params, "flow_euler", params["steps"], "flow", model=model, shift=shift)
        workload.info.update(flow_info, spacing=f"sigmas linear in (0, 1], shifted by {shift:g}")
        return workload

    # ---------------------------------------------------------------- quality
    def evaluate(self, state: SourceState, params, variant, output: Samples):
        out: dict[str, Any] = {"nfe": output.nfe}
        x = output.x.detach().to("cpu", torch.float64)
        n = len(x)
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x.reshape(n, -1))).any(1).sum())
            nan = {"value": math.nan, "n_samples": n, "reason": f"{bad} of {n} samples are not finite"}
            names = ("fd_data_true", "fd_data_sample") if state.source == "gmm" else ("fd_classifier",)
            if state.source != "pretrained":
                names += ("fd_inf",)
            return {**out, **{k: dict(nan) for k in names}}
        if state.source == "gmm":
            ref = state.reference
            mu, cov = feature_statistics(x)
            out["fd_data_true"] = {"value": frechet_distance(mu, cov, ref["mean"], ref["cov"]), "n_samples": n,
                                   "reference": "true mixture moments"}
            out["fd_data_sample"] = {"value": frechet_distance(mu, cov, *feature_statistics(ref["draws"])),
                                     "n_samples": n, "n_reference": len(ref["draws"])}
            out["fd_inf"] = fd_infinity(x, ref["mean"], ref["cov"], "fd_data_true")
            return out
        images = x.clamp(-1, 1).to(torch.float32)
        if state.source == "digits":
            from suites.common.diffusion_models import classifier_features

            feats = classifier_features(state.reference["classifier"], images)
            out["fd_classifier"] = {"value": frechet_distance(*feature_statistics(feats), *state.reference["features"]),
                                    "n_samples": n, "n_reference": len(state.reference["images"])}
            out["fd_inf"] = fd_infinity(feats, *state.reference["features"], "fd_classifier",
                                        n_reference=len(state.reference["images"]))
        out.update(self._fid(state, images))
        return out

    def _fid(self, state: SourceState, images: torch.Tensor) -> dict:
        reference = state.reference.get("images")
        if reference is None:
            result = FidResult("unavailable", reason=f"no reference images: set ${FID_REFERENCE_ENV}",
                               n_generated=len(images))
        else:
            weights, where = inception_weights_path()
            if weights is None:
                n_ref = len(reference) if isinstance(reference, torch.Tensor) else 0
                result = FidResult("unavailable", reason=where, n_generated=len(images), n_reference=n_ref)
            else:
                result = fid_kid(images, reference, weights_path=weights, device=state.device)
        return result.metric_values()


def fd_infinity(features, mu_ref, cov_ref, of: str, **extra) -> dict:
    """``fd_inf`` of ``features`` against fixed reference moments, or NaN with the reason where the
    samples are too few for the extrapolation."""
    n, dim = len(features), int(np.prod(features.shape[1:]))
    try:
        sizes = fd_subset_sizes(n, dim)
    except ValueError as exc:
        return {"value": math.nan, "n_samples": n, "of": of, "reason": str(exc), **extra}
    return frechet_distance_infinity(features, mu_ref, cov_ref, sizes=sizes, seed=REFERENCE_SEED).metric_value(
        of=of, **extra)


def _unet_fn(unet) -> Callable:
    """``eps = fn(x, t)`` around a diffusers UNet2DModel (epsilon or v prediction alike)."""

    def fn(x, t):
        return unet(x, t).sample

    fn.module = unet
    return fn
