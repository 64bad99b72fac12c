"""FID/KID through torch-fidelity with local Inception weights, and the float64 Frechet distance."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch

from harness.metrics import fid as fidmod
from harness.metrics.fid import (
    INCEPTION_ENV,
    feature_statistics,
    fid_kid,
    frechet_distance,
    frechet_distance_features,
    frechet_distance_infinity,
    inception_weights_path,
    to_uint8_rgb,
)


def scipy_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent reference: float64 moments and scipy's sqrtm of S1 S2 (pytorch-fid's formula)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------- Frechet distance
def test_frechet_distance_matches_scipy_on_the_same_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    b = 0.3 + rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    ours = frechet_distance_features(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    ref = scipy_frechet(a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
    assert ours == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_identical_and_singular_sets():
    x = np.random.default_rng(1).normal(size=(5, 20))  # 5 samples in 20 dimensions: rank-deficient
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)
    mu, cov = feature_statistics(x)
    assert mu.dtype == np.float64 and cov.shape == (20, 20)
    with pytest.raises(ValueError):
        frechet_distance(mu, cov, mu[:3], cov[:3, :3])


def test_to_uint8_rgb_maps_range_and_channels():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    out = to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 0].flatten().tolist() == [0, 128, 255, 255]


# --------------------------------------------------------------------------- weights lookup
def test_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    path, reason = inception_weights_path()
    assert path is None and INCEPTION_ENV in reason and "checkpoints" in reason
    imgs = torch.zeros(4, 1, 8, 8)
    res = fid_kid(imgs, imgs)
    assert res.status == "unavailable" and not res.ok and res.reason == reason
    values = res.metric_values()
    assert math.isnan(values["fid"]["value"]) and values["fid"]["status"] == "unavailable"
    assert values["fid"]["reason"] == reason and values["kid"]["n_samples"] == 4


def test_env_var_naming_a_missing_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "nope.pth"))
    path, reason = inception_weights_path()
    assert path is None and "nope.pth" in reason and "not a file" in reason


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """An Inception-v3 state dict with torch-fidelity's architecture and random weights, on disk."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for m in net.modules():  # variance-preserving init so features neither vanish nor explode
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def _images(seed: int, n: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) * 2 - 1 + shift).clamp(-1, 1)


@pytest.mark.slow
def test_fid_kid_reads_weights_from_the_env_path(random_inception, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(random_inception))
    calls = []
    real = torch.load

    def spy(path, *a, **k):
        calls.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(torch, "load", spy)
    images = _images(0, 3)  # Inception runs at 299x299 whatever the input: keep the count tiny
    res = fid_kid(images, images.clone(), batch_size=3)
    assert res.ok, res.reason
    assert calls == [str(random_inception)]  # torch-fidelity loaded exactly this file
    assert res.weights_path == str(random_inception)
    assert res.fid == pytest.approx(0.0, abs=1e-2)  # identical sets
    assert math.isfinite(res.kid_mean) and res.n_generated == 3 and res.n_reference == 3
    values = res.metric_values()
    assert values["fid"]["weights"] == str(random_inception) and values["fid"]["status"] == "ok"


def test_weights_are_found_in_the_torch_hub_cache(random_inception, tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    target = fidmod.hub_inception_path()
    assert target.name == "weights-inception-2015-12-05-6726825d.pth"  # the name torch-fidelity downloads to
    target.parent.mkdir(parents=True)
    target.symlink_to(random_inception)
    path, where = inception_weights_path()
    assert path == target and where == "torch hub cache"


def test_a_weights_file_of_another_network_is_unavailable_not_a_crash(tmp_path, monkeypatch):
    bad = tmp_path / "not-inception.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    monkeypatch.setenv(INCEPTION_ENV, str(bad))
    res = fid_kid(_images(0, 2), _images(1, 2))
    assert res.status == "unavailable" and "torch-fidelity failed" in res.reason and str(bad) in res.reason


# --------------------------------------------------------------------------- FD at infinitely many samples
def test_fit_line_recovers_an_exact_line():
    x = 1.0 / np.array([100, 200, 400, 800])
    fit = fidmod.fit_line(x, 0.25 + 30.0 * x)
    assert fit.intercept == pytest.approx(0.25, abs=1e-12) and fit.slope == pytest.approx(30.0, rel=1e-10)
    assert fit.residual_rms < 1e-12 and fit.intercept_se < 1e-10
    with pytest.raises(ValueError):
        fidmod.fit_line([0.1, 0.1], [1.0, 2.0])


def test_fd_subset_sizes_span_a_tenth_to_all_and_refuse_too_few():
    sizes = fidmod.fd_subset_sizes(5000, 16)
    assert sizes[0] == 500 and sizes[-1] == 5000 and len(sizes) == fidmod.FD_INF_POINTS
    assert fidmod.fd_subset_sizes(250, 16)[0] == 32  # at least twice the dimension
    with pytest.raises(ValueError, match="too few"):
        fidmod.fd_subset_sizes(40, 32)


def test_fd_inf_recovers_a_known_intercept_on_gaussian_features():
    """Shifted Gaussian vs exact reference moments: FD at infinity is |delta|^2; finite N sits above it."""
    rng = np.random.default_rng(0)
    dim, n, draws = 16, 2000, 16
    a = rng.normal(size=(dim, dim))
    cov, mu = a @ a.T / dim, rng.normal(size=dim)
    delta = np.full(dim, 0.05)
    true = float(delta @ delta)  # same covariance: the trace term vanishes
    intercepts, full = [], []
    for seed in range(draws):
        x = np.random.default_rng(100 + seed).multivariate_normal(mu + delta, cov, size=n)
        res = frechet_distance_infinity(x, mu, cov, seed=seed)
        assert res.sizes[-1] == n and len(res.distances) == len(res.sizes)
        assert res.distances[-1] == pytest.approx(frechet_distance(*feature_statistics(x), mu, cov))
        intercepts.append(res.value)
        full.append(res.distances[-1])
        value = res.metric_value(of="test")
        assert value["value"] == res.value and value["residual_rms"] >= 0 and value["n_samples"] == n
    bias_full = np.mean(full) - true
    sem = np.std(intercepts) / math.sqrt(draws)
    assert bias_full > 0.02  # the small-sample bias of FD at N = 2000 ...
    assert abs(np.mean(intercepts) - true) < 3 * sem < 0.5 * bias_full  # ... which the intercept is free of
