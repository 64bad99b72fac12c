"""Backward timings start from fresh gradients; FLOP counts say how they were made; the
environment records the precision state; attention records the SDPA backend."""

from __future__ import annotations

import pytest
import torch

from harness import Timing
from harness.measure.environment import fingerprint, precision_state
from harness.measure import CpuTimer, count_flops, measure_time
from harness.plan import plan_suite
from harness.run.executors import CaseExecutor
from suites.attention import Attention
from suites.common.models import build_model, gpt_training_flops, loss_fn, make_batches, preset_spec
from suites.common.training import training_step_flops

PARAMS = {"batch": 1, "heads": 2, "seq_len": 64, "head_dim": 16, "causal": True, "dtype": "float32",
          "pass": "forward+backward", "qk_std": 0.5, "inputs": "gaussian", "logit_scale": 8.0}


@pytest.mark.parametrize("variant", ["softmax", "sdpa", "linear"])
def test_attention_backward_gradients_do_not_accumulate_across_samples(variant):
    suite = Attention()
    state = suite.prepare(PARAMS, "cpu")
    workload = getattr(suite, variant)(state, PARAMS)
    assert workload.before_sample is not None
    workload.before_sample()
    workload.fn()
    one_call = [t.grad.clone() for t in (state.q, state.k, state.v)]
    # exactly 3 warm-up calls and 5 samples, however slow the machine is
    timing = Timing(warmup_s=0.0, min_warmup=3, budget_s=1e6, min_runs=5, max_runs=5, rel_spread=0.0)
    result = measure_time(workload.fn, timing, CpuTimer(), before=workload.before_sample)
    assert (result.warmup_runs, result.stats.n) == (3, 5)
    for after, once in zip((state.q.grad, state.k.grad, state.v.grad), one_call):
        assert torch.equal(after, once)  # the gradient of one call, not of every call summed


def test_attention_forward_has_no_hook():
    params = dict(PARAMS, **{"pass": "forward"})
    suite = Attention()
    assert suite.softmax(suite.prepare(params, "cpu"), params).before_sample is None


def test_engine_runs_the_hook_before_the_probe_calls_too():
    cases = [c for c in plan_suite(Attention, "quick", "cpu", "sdpa and causal=True and pass=forward+backward")]
    executor = CaseExecutor({"attention": Attention})
    try:
        record = executor.run(cases[0])
        state = executor._state
    finally:
        executor.close()
    assert record.status == "ok", record.reason
    single = state.q.grad.clone()
    state.q.grad = state.k.grad = state.v.grad = None
    torch.nn.functional.scaled_dot_product_attention(state.q, state.k, state.v, is_causal=True).backward(state.dout)
    assert torch.equal(single, state.q.grad)
    assert record.info["sdpa_backend"].endswith("(CPU kernel)")
    assert record.info["flops_method"] == "formula"


def test_gpt_flops_formula_halves_causal_attention():
    spec = preset_spec("gpt_tiny", 2)
    model = build_model(spec)
    inputs, targets = make_batches(spec, 1)[0]
    t, d, depth = spec.input_size, spec.width, spec.depth
    full_attention = 3 * spec.batch * depth * 4 * t * t * d  # forward + backward
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the math path multiplies the full score matrix
        counted_full, _ = count_flops(lambda: loss_fn(model(inputs), targets).backward())
    assert gpt_training_flops(spec) == counted_full - full_attention / 2
    flops, method = training_step_flops(spec, lambda: 1 / 0)
    assert (flops, method) == (gpt_training_flops(spec), "formula")
    assert training_step_flops(preset_spec("vit_tiny", 2), lambda: 123) == (123.0, "FlopCounterMode")


def test_fingerprint_records_the_precision_state():
    state = precision_state()
    assert state["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert state["cudnn_benchmark"] == torch.backends.cudnn.benchmark
    assert state["cudnn_deterministic"] == torch.backends.cudnn.deterministic
    assert "cuda_matmul_allow_tf32" in state or "cuda_matmul_fp32_precision" in state
    assert fingerprint("cpu")["precision"] == state
