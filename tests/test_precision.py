"""Precision suite: errors in their bands, skips with reasons, loss scaling, shared workloads."""

from __future__ import annotations

import pytest
import torch

from harness.plan import plan_suite
from harness.run.executors import CaseExecutor
from suites.common.models import ModelSpec, build_model, make_batches, preset_spec
from suites.common.training import TrainStep, make_optimizer
from suites.precision import PRECISIONS, Precision, PrecisionState, cpu_has_fast_fp16

SMALL = {
    "gpt": ModelSpec("gpt", batch=2, input_size=32, depth=2, width=64, heads=2, classes=128),
    "vit": ModelSpec("vit", batch=2, input_size=16, depth=2, width=64, heads=2, classes=10, patch=4),
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def state(request):
    return PrecisionState(SMALL[request.param], "cpu", k_steps=6)


def test_forward_errors_against_float64_are_in_their_bands(state):
    ref = state.float64_output()
    from harness.metrics.numeric import relative_error

    fp32 = relative_error(state.forward_output(PRECISIONS["fp32"]), ref)
    bf16 = relative_error(state.forward_output(PRECISIONS["bf16_amp"]), ref)
    assert fp32 < 1e-5  # far below 1e-3
    assert 1e-3 < bf16 < 5e-2  # bfloat16 keeps 8 bits: around 1e-2
    assert ref.abs().max() > 0  # a zero output would make the error meaningless


def test_k_step_runs_are_reproducible_and_bf16_stays_close(state):
    first = state.train_k_steps(PRECISIONS["fp32"])
    again = state.train_k_steps(PRECISIONS["fp32"])
    assert first["loss"] == again["loss"] and first["curve"] == again["curve"]
    assert first["curve"][-1] < first["curve"][0]  # the synthetic task is learnable
    bf16 = state.train_k_steps(PRECISIONS["bf16_amp"])
    assert abs(bf16["loss"] - first["loss"]) / first["loss"] < 0.05
    assert first["skipped"] == 0


def test_grad_scaler_skipped_steps_are_counted():
    spec = SMALL["gpt"]
    model = build_model(spec).train()
    # A scale that overflows float32 gradients: the scaler must skip and back off.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1000)
    step = TrainStep(model, make_optimizer(model), scaler=scaler)
    before = [p.detach().clone() for p in model.parameters()]
    inputs, targets = make_batches(spec, 1)[0]
    step(inputs, targets, count_skips=True)
    assert step.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no update
    for _ in range(3):
        step(inputs, targets, count_skips=True)
    assert step.skipped_steps < 4  # the scale came down until steps went through


def test_variants_a_cpu_cannot_run_are_skipped_with_their_reason():
    overrides = {"model": ["gpt_tiny"], "batch": ["2"], "k_steps": ["2"]}
    cases = plan_suite(Precision, "quick", "cpu", overrides=overrides)
    executor = CaseExecutor({"precision": Precision})
    records = {c.variant: executor.run(c) for c in cases}
    assert set(records) == set(Precision.variants()) == set(PRECISIONS)
    unmet = {name: spec.unmet("cpu") for name, spec in Precision.variants().items()}
    for name, why in unmet.items():
        if why:
            assert records[name].status == "skipped" and records[name].reason == why
    if not cpu_has_fast_fp16():
        assert records["fp16_amp"].status == "skipped" and "float16" in records["fp16_amp"].reason
    for name in ("fp32", "bf16_amp"):
        record = records[name]
        assert record.status == "ok", record.reason
        m = record.metrics
        assert m["throughput"].unit == "samples/s" and m["tflops"].value > 0
        assert m["total_memory"].value > m["peak_memory"].value > 0
        assert len(m["loss_after_k"].extra["curve"]) == 2
        assert "scaler_skipped_steps" not in m  # only scaler variants report it
    assert records["fp32"].metrics["loss_deviation"].value == 0.0
    assert records["fp32"].metrics["fwd_rel_error"].value < 1e-5


def test_models_are_seeded_and_presets_build_without_downloads():
    spec = preset_spec("vit_tiny", batch=2)
    a, b = build_model(spec, seed=3), build_model(spec, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    x1, y1 = make_batches(spec, 2, seed=1)[1]
    x2, y2 = make_batches(spec, 2, seed=1)[1]
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (2, 3, 32, 32)
    tokens, targets = make_batches(preset_spec("gpt_tiny", batch=3), 1)[0]
    assert tokens.shape == targets.shape == (3, 64)
    assert torch.equal(tokens[:, 1:], targets[:, :-1])  # targets are the next tokens
    for name in ("resnet50_64px", "efficientnet_b0_64px"):
        out = build_model(preset_spec(name, batch=2)).eval()(make_batches(preset_spec(name, batch=2), 1)[0][0])
        assert out.shape == (2, 100)
