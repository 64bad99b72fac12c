"""FID and KID through torch-fidelity, offline; and a float64 Frechet distance on any features.

The Inception-v3 network behind FID is read from a local file only: the path in
``$HARNESS_INCEPTION_WEIGHTS``, else the file torch-fidelity itself would have downloaded into
the torch hub cache (``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth``).
Nothing is downloaded. Where no weights file is found, :func:`fid_kid` returns a result with
status ``unavailable`` and the reason, never a number computed some other way.

:func:`frechet_distance` is the same distance on features a caller computes itself (data
space, a small classifier's features): it is reported under its own name, not as FID.
:func:`frechet_distance_infinity` extrapolates that distance to infinitely many generated
samples (Chong & Forsyth 2020), so the estimator's small-sample bias does not decide a comparison.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INCEPTION_ENV = "HARNESS_INCEPTION_WEIGHTS"
FID_FEATURE_LAYER = "2048"  # the pool3 features of the standard FID


def hub_inception_path() -> Path:
    """Where torch-fidelity caches its Inception weights (torch hub ``checkpoints`` folder)."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def inception_weights_path() -> tuple[Path | None, str]:
    """The local Inception weights file and where it came from, or None and why there is none."""
    configured = os.environ.get(INCEPTION_ENV)
    if configured:
        path = Path(configured).expanduser()
        if path.is_file():
            return path, f"${INCEPTION_ENV}"
        return None, f"${INCEPTION_ENV} names {path}, which is not a file"
    try:
        hub = hub_inception_path()
    except ImportError as exc:
        return None, f"torch-fidelity is not importable: {exc}"
    if hub.is_file():
        return hub, "torch hub cache"
    return None, (
        f"no Inception weights on this machine: set ${INCEPTION_ENV} to the torch-fidelity "
        f"Inception .pth file, or place it at {hub}"
    )


@dataclass
class FidResult:
    """FID/KID of generated images against reference images, or why they could not be computed."""

    status: str  # "ok" or "unavailable"
    reason: str = ""
    fid: float = math.nan
    kid_mean: float = math.nan
    kid_std: float = math.nan
    n_generated: int = 0
    n_reference: int = 0
    weights_path: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def metric_values(self) -> dict[str, dict[str, Any]]:
        """``{"fid": {...}, "kid": {...}}`` in the form a suite's ``evaluate`` returns."""
        common = {"n_samples": self.n_generated, "n_reference": self.n_reference, "status": self.status}
        if self.ok:
            common["weights"] = self.weights_path
        else:
            common["reason"] = self.reason
        out = {"fid": {"value": self.fid, **common}}
        out["kid"] = {"value": self.kid_mean, "std": self.kid_std, **common}
        return out


def to_uint8_rgb(images) -> "Any":
    """Float images in [-1, 1], shape (N, C, H, W) with C in {1, 3}, to uint8 (N, 3, H, W) on the CPU."""
    import torch

    x = images.detach().to("cpu", torch.float32)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1|3, H, W), got {tuple(x.shape)}")
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def _as_input(images):
    """What torch-fidelity takes: a folder path as is, tensors as a Dataset of uint8 (3, H, W) images."""
    from torch.utils.data import Dataset

    if isinstance(images, (str, os.PathLike)):
        return str(images)  # a folder of image files: torch-fidelity reads it
    data = images.detach().cpu().contiguous() if str(getattr(images, "dtype", "")) == "torch.uint8" \
        else to_uint8_rgb(images)

    class UInt8Images(Dataset):
        def __len__(self) -> int:
            return int(data.shape[0])

        def __getitem__(self, i):
            return data[i]

    return UInt8Images()


def fid_kid(
    generated,
    reference,
    *,
    weights_path: str | os.PathLike | None = None,
    device: str = "cpu",
    kid: bool = True,
    batch_size: int = 64,
    kid_subset_size: int = 1000,
) -> FidResult:
    """FID (and KID) with torch-fidelity's Inception-v3 read from a local weights file.

    ``generated`` and ``reference`` are float images in [-1, 1] (N, C, H, W), uint8 images
    (N, 3, H, W) or a folder of image files. ``weights_path`` defaults to
    :func:`inception_weights_path`; without a file the result is ``unavailable`` with the reason.
    KID's subset size is capped at the smaller sample count.
    """
    if weights_path is None:
        found, where = inception_weights_path()
        if found is None:
            return FidResult("unavailable", reason=where, n_generated=_count(generated), n_reference=_count(reference))
        weights_path = found
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        return FidResult("unavailable", reason=f"Inception weights file {weights_path} does not exist",
                         n_generated=_count(generated), n_reference=_count(reference))
    try:
        import torch_fidelity
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        return FidResult("unavailable", reason=f"torch-fidelity is not importable: {exc}")

    input1, input2 = _as_input(generated), _as_input(reference)
    n1, n2 = _count(input1), _count(input2)
    subset = max(2, min(kid_subset_size, n1, n2))
    try:
        metrics = torch_fidelity.calculate_metrics(
            input1=input1,
            input2=input2,
            fid=True,
            kid=kid and min(n1, n2) >= 2,
            kid_subset_size=subset,
            feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(weights_path),
            cuda=str(device).startswith("cuda"),
            batch_size=batch_size,
            cache=False,  # never write feature caches next to torch hub
            save_cpu_ram=True,  # no DataLoader worker processes
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - e.g. a weights file of another network: reported, not raised
        return FidResult("unavailable", reason=f"torch-fidelity failed with {weights_path}: "
                         f"{type(exc).__name__}: {str(exc)[:200]}", n_generated=n1, n_reference=n2)
    result = FidResult(
        "ok",
        fid=float(metrics["frechet_inception_distance"]),
        n_generated=n1,
        n_reference=n2,
        weights_path=str(weights_path),
    )
    if "kernel_inception_distance_mean" in metrics:
        result.kid_mean = float(metrics["kernel_inception_distance_mean"])
        result.kid_std = float(metrics["kernel_inception_distance_std"])
        result.extras["kid_subset_size"] = subset
    return result


def _count(images) -> int:
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        return sum(1 for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if path.is_dir() else 0
    try:
        return len(images)
    except TypeError:
        return 0


# --------------------------------------------------------------------------- Frechet distance
def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    f = _float64(features).reshape(len(features), -1)
    if f.shape[0] < 2:
        raise ValueError("the Frechet distance needs at least 2 samples")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in float64.

    The matrix square root uses symmetric eigen-decompositions (negative eigenvalues from
    round-off are clipped to zero), so it stays real for singular covariances, which is what
    few samples in many dimensions give.
    """
    mu1, mu2 = _float64(mu1).ravel(), _float64(mu2).ravel()
    s1 = np.atleast_2d(_float64(sigma1))
    s2 = np.atleast_2d(_float64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w1, v1 = np.linalg.eigh(s1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(value, 0.0)  # a distance: round-off on singular covariances can dip below zero


def frechet_distance_features(features1, features2) -> float:
    """Frechet distance between the Gaussians fitted to two sets of (N, D) features."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def _float64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        import torch

        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- FD at infinitely many samples
FD_INF_POINTS = 15  # subset sizes in the fit (Chong & Forsyth's FID_inf uses 15)
FD_INF_MIN_FRACTION = 0.1  # smallest subset: a tenth of the samples (their 5k of 50k)
FD_INF_REPEATS = 10  # random subsets averaged per size


@dataclass
class LineFit:
    """Least-squares line ``y = intercept + slope x`` with its residual and the intercept's standard error."""

    intercept: float
    slope: float
    residual_rms: float  # root mean square of y - fit, in the unit of y
    intercept_se: float  # OLS standard error of the intercept (nan with fewer than 3 points)


def fit_line(x, y) -> LineFit:
    """Ordinary least squares of ``y`` on ``x`` (float64); needs two distinct x values."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or len(np.unique(x)) < 2:
        raise ValueError("a line fit needs at least two distinct x values, one y per x")
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    se = math.nan
    if len(x) > 2:
        s2 = float((resid**2).sum()) / (len(x) - 2)
        se = math.sqrt(s2 * (1.0 / len(x) + xm * xm / sxx))
    return LineFit(intercept, slope, float(np.sqrt((resid**2).mean())), se)


@dataclass
class FdInfinity:
    """A Frechet distance extrapolated to infinitely many generated samples (Chong & Forsyth 2020)."""

    value: float  # the intercept at 1/N = 0
    fit: LineFit
    sizes: list[int]
    distances: list[float]  # mean distance over the subsets of each size
    repeats: int = 1

    def metric_value(self, **extra: Any) -> dict[str, Any]:
        """The form a suite's ``evaluate`` returns: value plus the fit that produced it."""
        return {"value": self.value, "residual_rms": self.fit.residual_rms, "intercept_se": self.fit.intercept_se,
                "slope": self.fit.slope, "sizes": list(self.sizes), "distances": list(self.distances),
                "subsets_per_size": self.repeats, "n_samples": max(self.sizes), **extra}


def fd_subset_sizes(n: int, dim: int, points: int = FD_INF_POINTS,
                    min_fraction: float = FD_INF_MIN_FRACTION) -> list[int]:
    """Subset sizes for :func:`frechet_distance_infinity`: ``points`` sizes from ``min_fraction`` n to n.

    The smallest size is at least ``2 dim``, so every subset's covariance has full rank with room
    to spare; raises ValueError when that leaves fewer than 3 distinct sizes.
    """
    low = max(int(math.ceil(min_fraction * n)), 2 * dim, 2)
    if n - low < 2:
        raise ValueError(f"{n} samples of dimension {dim} are too few to extrapolate the Frechet distance "
                         f"(the smallest subset must hold at least {low})")
    sizes = sorted({int(round(s)) for s in np.linspace(low, n, points)})
    return sizes


def frechet_distance_infinity(features, mu_ref, sigma_ref, *, sizes: list[int] | None = None,
                              repeats: int = FD_INF_REPEATS, seed: int = 0) -> FdInfinity:
    """The Frechet distance at infinitely many samples: FD on random subsets of N of the generated
    ``features`` against fixed reference moments, a least-squares line in 1/N, its intercept.

    Chong & Forsyth (2020) show that the estimator's bias is linear in 1/N, so the intercept is
    free of it and comparable across sample counts; the fit's residual says how well the line
    holds. As in their method the reference moments are those of the full reference set (or
    exact ones). Their code draws one subset per size from 50k samples; with the few thousand
    samples a benchmark affords, one subset of a tenth of them varies by more than the bias, so
    the distance at each size is the mean over ``repeats`` seeded random subsets (the full set
    is one subset). An intercept within its standard error of zero may come out slightly negative.
    """
    f = _float64(features).reshape(len(features), -1)
    n, dim = f.shape
    sizes = sorted(set(sizes)) if sizes is not None else fd_subset_sizes(n, dim)
    if not sizes or sizes[0] < 2 or sizes[-1] > n:
        raise ValueError(f"subset sizes must lie within [2, {n}], got {sizes}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rng = np.random.default_rng(seed)
    distances = []
    for size in sizes:
        draws = 1 if size == n else repeats
        values = [frechet_distance(*feature_statistics(f[rng.permutation(n)[:size]]), mu_ref, sigma_ref)
                  for _ in range(draws)]
        distances.append(float(np.mean(values)))
    fit = fit_line(1.0 / np.asarray(sizes, dtype=np.float64), distances)
    return FdInfinity(fit.intercept, fit, list(sizes), distances, repeats)
