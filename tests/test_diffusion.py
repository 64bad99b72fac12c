"""The diffusion suite: exact GMM denoiser, sampler loop and schedulers, caches, local checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import suites.diffusion as diffusion
from harness.metrics.fid import INCEPTION_ENV
from harness.present.export import build_tables, to_markdown
from harness.plan import plan_suite
from harness.run.session import run_cases
from suites.common import diffusion_models as dm
from suites.diffusion import (
    Diffusion,
    SamplerRun,
    SourceState,
    make_scheduler,
    quadratic_timesteps,
    sample_loop,
    set_steps,
)

TINY_UNET = dm.DigitsUNetConfig(block_out_channels=(8, 16), layers_per_block=1, attention=False,
                                norm_num_groups=4, train_steps=2, batch_size=8)
TINY_CLASSIFIER = dm.DigitsClassifierConfig(channels=(4, 8), feature_dim=8, epochs=1, batch_size=256)


# --------------------------------------------------------------------------- GMM denoiser
@pytest.mark.parametrize("abar", [0.9, 0.3, 0.02])
def test_gmm_posterior_mean_equals_monte_carlo(abar):
    gmm = dm.make_gmm(dim=3, components=3, seed=1, var_range=(0.01, 0.2))
    model = dm.GMMDenoiser(gmm, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x0 = gmm.sample(400_000, g)
    queries = math.sqrt(abar) * gmm.sample(4, g) + math.sqrt(1 - abar) * torch.randn(4, 3, generator=g, dtype=torch.float64)
    # E[x0 | xt] = sum_i x0_i p(xt | x0_i) / sum_i p(xt | x0_i), x0_i drawn from the prior
    logw = -((queries[:, None, :] - math.sqrt(abar) * x0[None]) ** 2).sum(-1) / (2 * (1 - abar))
    w = torch.softmax(logw, dim=1)
    mc = w @ x0
    exact = model.posterior_mean(queries, abar)
    ess = 1.0 / (w**2).sum(1)
    assert ess.min() > 200  # enough effective samples for the tolerance below
    assert torch.allclose(exact, mc, atol=0.03), (exact, mc)


def test_gmm_denoiser_eps_and_timestep_interpolation():
    gmm = dm.make_gmm(dim=4, components=2, seed=0)
    abar = dm.alphas_cumprod()
    model = dm.GMMDenoiser(gmm, abar, dtype=torch.float64)
    assert model.abar_at(torch.tensor(500)) == pytest.approx(float(abar[500]), rel=1e-12)
    mid = model.abar_at(500.5)
    assert float(abar[501]) < mid < float(abar[500])
    x = torch.randn(5, 4, dtype=torch.float64)
    eps = model(x, torch.tensor(300))
    x0 = model.posterior_mean(x, float(abar[300]))
    assert torch.allclose(x, abar[300].sqrt() * x0 + (1 - abar[300]).sqrt() * eps)


def test_gmm_moments_match_samples():
    gmm = dm.make_gmm(dim=5, components=3, seed=2)
    mean, cov = gmm.moments()
    x = gmm.sample(200_000, torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.03)


# --------------------------------------------------------------------------- schedulers + loop
def test_quadratic_timesteps():
    seq = quadratic_timesteps(10)
    assert len(seq) == 10 and seq[-1] == 0 and seq[0] == 800
    assert all(a > b for a, b in zip(seq, seq[1:]))
    full = quadratic_timesteps(1000)
    assert sorted(full) == list(range(1000))


def _gmm_state(n=32, batch=16, device="cpu") -> SourceState:
    gmm = dm.make_gmm(dim=4, components=2, seed=0)
    noise = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return SourceState("gmm", dm.GMMDenoiser(gmm), dict(dm.TRAINING_SCHEDULE), noise, batch, device)


def test_sequence_ddim_matches_diffusers_on_uniform_strides():
    state = _gmm_state()
    for eta in (0.0, 1.0):
        outs = []
        for force_generic in (False, True):
            sched = make_scheduler("ddim", state.schedule, "leading")
            set_steps(sched, 10, "leading", "cpu")
            assert sched.uniform
            sched.uniform = not force_generic  # the generic path must give diffusers' own result
            gen = torch.Generator().manual_seed(3)
            outs.append(sample_loop(state.model, sched, state.noise, gen, {"eta": eta})[0])
        assert torch.allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "quadratic"])
def test_ddim_eta0_and_euler_follow_the_same_ode(spacing):
    """DDIM (eta 0) is Euler's method in sigma; equal results also check the custom-timestep DDIM step."""
    state = _gmm_state(n=64, batch=64)
    x_ddim = SamplerRun(state, make_scheduler("ddim", state.schedule, spacing), 20, spacing, {"eta": 0.0})()
    x_euler = SamplerRun(state, make_scheduler("euler", state.schedule, spacing), 20, spacing, {})()
    assert torch.allclose(x_ddim, x_euler, atol=1e-3)


def test_gmm_source_shows_the_ddim_table_in_kind():
    """Few stochastic steps are much worse than as many DDIM steps; 50 DDIM steps match 1000 of DDPM."""
    suite = Diffusion()
    state = suite.prepare({"source": "gmm", "n_samples": 1000, "batch": 1000}, "cpu")

    def fd(kind, steps, step_kwargs=None, **options):
        run = SamplerRun(state, make_scheduler(kind, state.schedule, "leading", **options), steps, "leading",
                         step_kwargs or {})
        return suite.evaluate(state, {}, kind, run.samples())["fd_data_true"]["value"]

    ddim10, ddim50 = fd("ddim", 10, {"eta": 0.0}), fd("ddim", 50, {"eta": 0.0})
    sigma_hat10 = fd("ddpm", 10, variance_type="fixed_large")
    ddpm1000 = fd("ddpm", 1000, variance_type="fixed_small")
    assert sigma_hat10 > 5 * ddim10
    assert ddim50 < 1.5 * ddpm1000


def test_sampler_run_is_deterministic_and_batches_cover_n_samples():
    state = _gmm_state(n=40, batch=16)
    run = SamplerRun(state, make_scheduler("ddim", state.schedule, "quadratic"), 5, "quadratic", {"eta": 1.0})
    a, b = run(), run()
    assert torch.equal(a, b) and a.shape == (16, 4)
    out = run.samples()
    assert out.x.shape == (40, 4) and out.nfe == 5 and out.batch == 16
    assert torch.equal(out.x[:16], a)


@pytest.mark.slow
def test_every_sampler_variant_runs_on_every_spacing():
    overrides = {"n_samples": ["24"], "batch": ["16"], "steps": ["4"], "eta": ["0.0", "1.0"],
                 "spacing": ["leading", "trailing", "linspace", "quadratic"]}
    cases = plan_suite(Diffusion, "quick", "cpu", overrides=overrides)
    assert {c.variant for c in cases} == set(Diffusion.variants())
    records = run_cases(cases, {"diffusion": Diffusion}, progress=False)
    bad = [(r.variant, r.params, r.reason) for r in records if r.status != "ok"]
    assert not bad
    for r in records:
        steps = r.params.get("steps", 1000)
        assert r.metrics["nfe"].value == steps
        assert r.metrics["fd_data_true"].extra["n_samples"] == 24
        assert r.metrics["fd_data_sample"].extra["n_reference"] == 24
        per_image = r.metrics["latency_per_image"]
        assert per_image.extra["items"] == 16 and per_image.value == r.metrics["latency"].value / 16
        assert math.isfinite(r.metrics["fd_data_true"].value)
        assert "fid" not in r.metrics and "not applicable" in r.info["fid"]


# --------------------------------------------------------------------------- digits caches
def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_digits_unet_cache_is_reused_and_rebuilt_when_corrupt():
    model, info = dm.digits_unet(TINY_UNET)
    assert info["cache"] == "built" and "final_loss" in info
    folder = dm.cache_dir("diffusion") / dm.config_key("digits-unet", TINY_UNET)
    assert info["cache_path"] == str(folder)
    model2, info2 = dm.digits_unet(TINY_UNET)
    assert info2["cache"] == "reused"
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    model3, info3 = dm.digits_unet(TINY_UNET)
    assert info3["cache"].startswith("rebuilt") and "checksum" in info3["cache"]
    assert dm.verify_cache(folder) is None
    (folder / dm.MANIFEST).unlink()
    _, info4 = dm.digits_unet(TINY_UNET)
    assert info4["cache"].startswith("rebuilt") and "manifest" in info4["cache"]
    other = dm.DigitsUNetConfig(**{**TINY_UNET.__dict__, "seed": 1})
    assert dm.config_key("digits-unet", other) != folder.name  # the key follows the training config


def test_digits_classifier_cache_and_features():
    clf, info = dm.digits_classifier(TINY_CLASSIFIER)
    assert info["cache"] in ("built", "reused") and 0.0 <= info["test_accuracy"] <= 1.0
    folder = dm.cache_dir("diffusion") / dm.config_key("digits-classifier", TINY_CLASSIFIER)
    manifest = json.loads((folder / dm.MANIFEST).read_text())
    assert manifest["config"]["feature_dim"] == 8 and "classifier.pt" in manifest["files"]
    (folder / "classifier.pt").write_bytes(b"garbage")
    clf2, info2 = dm.digits_classifier(TINY_CLASSIFIER)
    assert info2["cache"].startswith("rebuilt")
    feats = dm.classifier_features(clf2, dm.digits_images()[:10])
    assert feats.shape == (10, 8)


@pytest.mark.slow
def test_digits_source_end_to_end_reports_substitute_and_unavailable_fid(monkeypatch, tmp_path):
    monkeypatch.setattr(diffusion, "DIGITS_UNET", TINY_UNET)
    monkeypatch.setattr(diffusion, "DIGITS_CLASSIFIER", TINY_CLASSIFIER)
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "missing.pth"))
    overrides = {"source": ["digits"], "n_samples": ["12"], "batch": ["12"], "steps": ["3"], "eta": ["0.0"]}
    cases = [c for c in plan_suite(Diffusion, "quick", "cpu", overrides=overrides) if c.variant == "ddim"]
    (record,) = run_cases(cases, {"diffusion": Diffusion}, progress=False)
    assert record.status == "ok", record.reason
    assert record.metrics["fd_classifier"].extra["n_samples"] == 12
    assert record.metrics["fd_classifier"].extra["n_reference"] == 1797
    assert math.isfinite(record.metrics["fd_classifier"].value)
    fid = record.metrics["fid"]
    assert fid.value is None or math.isnan(fid.value)
    assert fid.extra["status"] == "unavailable" and "missing.pth" in fid.extra["reason"]


# --------------------------------------------------------------------------- pretrained folders
def _tiny_unet(sample_size=8, channels=3):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


def test_pretrained_pipeline_folder_loads_from_disk(tmp_path, monkeypatch):
    from diffusers import DDPMPipeline, DDPMScheduler

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unet = _tiny_unet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "pipe")
    loaded, schedule, info = dm.load_pretrained(tmp_path / "pipe")
    assert schedule["beta_schedule"] == "squaredcos_cap_v2" and "scheduler_config.json" in info["schedule_from"]
    for (k, a), b in zip(unet.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    unet.save_pretrained(tmp_path / "bare")  # a bare model folder: default linear schedule
    _, schedule2, info2 = dm.load_pretrained(tmp_path / "bare")
    assert schedule2["beta_schedule"] == "linear" and info2["schedule_from"] == "default linear schedule"
    with pytest.raises(FileNotFoundError):
        dm.load_pretrained(tmp_path / "nothing-here")


@pytest.mark.slow
def test_pretrained_source_runs_and_skips_without_a_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(diffusion.FID_REFERENCE_ENV, raising=False)
    overrides = {"source": ["pretrained"], "n_samples": ["4"], "batch": ["4"], "steps": ["2"],
                 "eta": ["0.0"], "spacing": ["trailing"]}
    cases = [c for c in plan_suite(Diffusion, "quick", "cpu", overrides=overrides) if c.variant == "dpm_solver"]
    monkeypatch.delenv(diffusion.PRETRAINED_ENV, raising=False)
    (skipped,) = run_cases(cases, {"diffusion": Diffusion}, progress=False)
    assert skipped.status == "skipped" and diffusion.PRETRAINED_ENV in skipped.reason
    _tiny_unet(sample_size=8, channels=3).save_pretrained(tmp_path / "model")
    monkeypatch.setenv(diffusion.PRETRAINED_ENV, str(tmp_path / "model"))
    (record,) = run_cases(cases, {"diffusion": Diffusion}, progress=False)
    assert record.status == "ok", record.reason
    assert record.metrics["nfe"].value == 2
    assert record.metrics["fid"].extra["status"] == "unavailable"
    assert diffusion.FID_REFERENCE_ENV in record.metrics["fid"].extra["reason"]


# --------------------------------------------------------------------------- flow matching
@pytest.mark.parametrize("s", [0.1, 0.5, 0.9])
def test_gmm_velocity_equals_monte_carlo(s):
    """v(x, s) = E[eps - x0 | x_s = x] on x_s = (1 - s) x0 + s eps, estimated by weighting prior draws."""
    gmm = dm.make_gmm(dim=3, components=3, seed=1, var_range=(0.01, 0.2))
    model = dm.GMMVelocity(gmm, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x0 = gmm.sample(400_000, g)
    queries = (1 - s) * gmm.sample(4, g) + s * torch.randn(4, 3, generator=g, dtype=torch.float64)
    # p(x_s | x0_i) = N((1 - s) x0_i, s^2 I); given x0_i, eps_i = (x_s - (1 - s) x0_i) / s
    logw = -((queries[:, None, :] - (1 - s) * x0[None]) ** 2).sum(-1) / (2 * s * s)
    w = torch.softmax(logw, dim=1)
    eps_minus_x0 = (queries[:, None, :] - (1 - s) * x0[None]) / s - x0[None]
    mc = (w.unsqueeze(-1) * eps_minus_x0).sum(1)
    exact = model.velocity(queries, s)
    ess = 1.0 / (w**2).sum(1)
    assert ess.min() > 200
    assert torch.allclose(exact, mc, atol=0.05), (exact, mc)
    # the model interface: timestep t = s T, as diffusers' flow-matching scheduler passes it
    assert torch.allclose(model(queries, torch.tensor(s * 1000.0, dtype=torch.float64)), exact, atol=1e-9)
    with pytest.raises(ValueError):
        model.velocity(queries, 0.0)


def test_flow_scheduler_convention_is_the_straight_path():
    """diffusers' scale_noise is x_s = s eps + (1 - s) x0 and its Euler step with v = eps - x0 is exact on it."""
    sched = make_scheduler("flow_euler", dm.TRAINING_SCHEDULE, "flow", shift=3.0)
    set_steps(sched, 5, "flow", "cpu")
    x0, eps = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    t, s = sched.timesteps[2], float(sched.sigmas[2])
    assert torch.allclose(sched.scale_noise(x0, t.reshape(1), eps), s * eps + (1 - s) * x0)
    x = s * eps + (1 - s) * x0
    sched._step_index = 2
    nxt = float(sched.sigmas[3])
    stepped = sched.step(eps - x0, t, x).prev_sample
    assert torch.allclose(stepped.double(), nxt * eps + (1 - nxt) * x0, atol=1e-6)


def test_exact_flow_reaches_the_mixture_and_matches_ddim_in_kind():
    suite = Diffusion()
    state = suite.prepare({"source": "gmm", "n_samples": 1000, "batch": 1000}, "cpu")
    velocity, info = state.flow_model()
    assert "exact" in info["velocity"]

    def fd(kind, steps, model=None, step_kwargs=None, **options):
        run = SamplerRun(state, make_scheduler(kind, state.schedule, "leading", **options), steps, "leading",
                         step_kwargs or {}, model)
        return suite.evaluate(state, {}, kind, run.samples())["fd_data_true"]["value"]

    ddpm1000 = fd("ddpm", 1000, variance_type="fixed_small")
    flow50 = fd("flow_euler", 50, velocity, shift=1.0)
    flow1 = fd("flow_euler", 1, velocity, shift=1.0)  # one Euler step lands on the mixture's mean
    assert flow50 < 1.5 * ddpm1000
    assert flow1 > 20 * flow50
    assert fd("flow_euler", 10, velocity, shift=3.0) < 3 * fd("ddim", 10, step_kwargs={"eta": 0.0})


def test_flow_variants_run_in_the_suite_and_report_fd_inf():
    overrides = {"n_samples": ["300"], "batch": ["300"], "steps": ["4"], "shift": ["1.0", "3.0"], "eta": ["0.0"]}
    cases = [c for c in plan_suite(Diffusion, "quick", "cpu", overrides=overrides)
             if c.variant in ("flow_euler", "ddim", "ddpm")]
    assert len(cases) == 4
    records = run_cases(cases, {"diffusion": Diffusion}, out_dir=None, progress=False)
    assert all(r.status == "ok" for r in records), [r.reason for r in records]
    for r in records:
        if r.variant != "flow_euler":
            continue
        assert r.metrics["nfe"].value == 4 and r.info["scheduler"] == "FlowMatchEulerDiscreteScheduler"
        fd_inf = r.metrics["fd_inf"]
        assert fd_inf.extra["of"] == "fd_data_true" and fd_inf.extra["sizes"][-1] == 300 and fd_inf.extra["sizes"][0] == 32
        assert math.isfinite(fd_inf.value) and fd_inf.extra["residual_rms"] >= 0
        assert fd_inf.extra["distances"][-1] == pytest.approx(r.metrics["fd_data_true"].value)
    # side by side at equal steps: the exporter pivots the variant param steps into the rows
    meta = {"diffusion": Diffusion.declaration()}
    (table,) = build_tables(records, meta, metric="fd_data_true", pivot=["steps"])
    assert table.row_params == ["steps"] and [row for row, _ in table.rows] == [(4,), (None,)]  # ddpm: no steps
    side_by_side = table.rows[0][1]
    assert set(side_by_side) == {"ddim[eta=0.0,spacing=leading]", "flow_euler[shift=1.0]", "flow_euler[shift=3.0]"}
    ddpm = table.rows[1][1]["ddpm"].value
    assert all(c.ratio == pytest.approx(c.value / ddpm) for c in side_by_side.values())  # against DDPM-1000
    text = to_markdown(build_tables(records, meta, pivot=["steps"]), layout="suite")
    assert "| 4 | flow_euler[shift=1.0] |" in text and "latency_per_image [ms]" in text and "fd_inf" in text


def test_fd_inf_reports_why_too_few_samples():
    out = diffusion.fd_infinity(torch.randn(20, 16), np.zeros(16), np.eye(16), "fd_data_true")
    assert math.isnan(out["value"]) and "too few" in out["reason"] and out["n_samples"] == 20


def test_digits_flow_model_is_trained_cached_and_sampled(monkeypatch, tmp_path):
    monkeypatch.setattr(diffusion, "DIGITS_UNET", TINY_UNET)
    monkeypatch.setattr(diffusion, "DIGITS_CLASSIFIER", TINY_CLASSIFIER)
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "missing.pth"))
    flow, info = dm.digits_unet(TINY_UNET, objective="flow")
    assert info["objective"] == "flow" and "digits-flow-unet" in info["cache_path"]
    eps_folder = dm.cache_dir("diffusion") / dm.config_key("digits-unet", TINY_UNET)
    assert info["cache_path"] != str(eps_folder)
    _, again = dm.digits_unet(TINY_UNET, objective="flow")
    assert again["cache"] == "reused"
    with pytest.raises(ValueError):
        dm.digits_unet(TINY_UNET, objective="score")
    overrides = {"source": ["digits"], "n_samples": ["12"], "batch": ["12"], "steps": ["3"], "shift": ["3.0"]}
    cases = [c for c in plan_suite(Diffusion, "quick", "cpu", overrides=overrides) if c.variant == "flow_euler"]
    (record,) = run_cases(cases, {"diffusion": Diffusion}, out_dir=None, progress=False)
    assert record.status == "ok", record.reason
    assert record.info["flow_unet"]["objective"] == "flow"
    assert math.isfinite(record.metrics["fd_classifier"].value) and record.metrics["nfe"].value == 3
    assert "too few" in record.metrics["fd_inf"].extra["reason"]  # 12 samples of 8-dim features


def test_pretrained_source_skips_flow_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_unet(sample_size=8, channels=3).save_pretrained(tmp_path / "model")
    monkeypatch.setenv(diffusion.PRETRAINED_ENV, str(tmp_path / "model"))
    overrides = {"source": ["pretrained"], "n_samples": ["4"], "batch": ["4"], "steps": ["2"], "shift": ["1.0"]}
    cases = [c for c in plan_suite(Diffusion, "quick", "cpu", overrides=overrides) if c.variant == "flow_euler"]
    (record,) = run_cases(cases, {"diffusion": Diffusion}, out_dir=None, progress=False)
    assert record.status == "skipped" and "velocity model" in record.reason
