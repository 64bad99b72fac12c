"""Checkpointing suite: gradients match, memory falls, the largest-batch search is right."""

from __future__ import annotations

import functools
import math
import os
import signal

import pytest
import torch

from harness.plan import plan_suite
from harness.run.executors import CaseExecutor
from suites.checkpointing import FORWARDS, Checkpointing, gradients, max_relative_difference, sqrt_segments
from suites.common.models import ModelSpec, build_model, make_batches
from suites.common.training import (
    IsolatedProbe,
    ProbeResult,
    StepProbe,
    TrainStep,
    largest_batch,
    make_optimizer,
    measure_step_memory,
    training_step_peak,
)

GPT = ModelSpec("gpt", batch=2, input_size=32, depth=4, width=32, heads=2, classes=64)
VIT = ModelSpec("vit", batch=2, input_size=16, depth=3, width=32, heads=2, classes=10, patch=4)


@pytest.mark.parametrize("spec", [GPT, VIT], ids=["gpt", "vit"])
@pytest.mark.parametrize("name", sorted(FORWARDS))
def test_gradients_equal_the_plain_run(spec, name):
    model = build_model(spec).train()
    inputs, targets = make_batches(spec, 1)[0]
    plain = gradients(model, FORWARDS["none"], inputs, targets, None)
    other = gradients(model, FORWARDS[name], inputs, targets, None)
    assert plain.keys() == other.keys() and len(plain) > 0
    assert max_relative_difference(other, plain) < 1e-6


def test_full_checkpointing_lowers_peak_memory_on_a_deep_stack():
    spec = ModelSpec("gpt", batch=4, input_size=64, depth=12, width=32, heads=2, classes=64)
    model = build_model(spec).train()
    inputs, targets = make_batches(spec, 1)[0]
    activations = {}
    for name in ("none", "full", "sqrt"):
        twin = build_model(spec).train()
        twin.load_state_dict(model.state_dict())
        step = TrainStep(twin, make_optimizer(twin), forward=FORWARDS[name])
        activations[name] = measure_step_memory(step, inputs, targets, "cpu").activation_bytes
    # none keeps ~12 blocks of activations; full keeps 12 block inputs plus one block's.
    assert activations["full"] < 0.4 * activations["none"]
    assert activations["full"] < activations["sqrt"] < activations["none"]


def test_sqrt_segments():
    assert [sqrt_segments(n) for n in (1, 2, 4, 9, 16, 30)] == [1, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- the search
@pytest.mark.parametrize("answer", [0, 1, 2, 7, 8, 33, 1000])
@pytest.mark.parametrize("start", [1, 4, 37, 900])
def test_search_finds_the_largest_batch_under_a_fake_cap(answer, start):
    asked = []

    def probe(batch):
        asked.append(batch)
        return batch <= answer

    result = largest_batch(probe, start=start, limit=4096)
    assert result.largest == answer and result.complete
    assert len(asked) == len(set(asked))  # never probes a batch twice
    assert len(asked) <= 2 * math.log2(4096) + 2  # bounded


def test_search_with_a_good_guess_needs_few_probes():
    result = largest_batch(lambda b: b <= 57, start=56)
    assert result.largest == 57 and len(result.probes) <= 4


def test_search_stops_at_its_limit_and_on_failures():
    capped = largest_batch(lambda b: True, start=3, limit=40)
    assert capped.largest == 40 and not capped.complete and "limit" in capped.note

    def flaky(batch):
        if batch >= 8:
            return ProbeResult(batch, False, "failed", detail="ValueError: broken")
        return True

    failed = largest_batch(flaky, start=1, limit=100)
    assert not failed.complete and "broken" in failed.note and failed.largest == 4

    budget = largest_batch(lambda b: b <= 1000, start=1, max_probes=3)
    assert not budget.complete and len(budget.probes) == 3


def fake_allocation(batch: int, per_sample: int, cap: int, crash: bool = False) -> int:
    """Worker target: 'allocates' per_sample bytes per sample under a fake allocator cap."""
    need = batch * per_sample
    if need > cap:
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)  # what the OS out-of-memory killer does
        raise torch.OutOfMemoryError(f"fake cap: tried to allocate {need} bytes")
    return need


@pytest.mark.slow
@pytest.mark.parametrize("crash", [False, True], ids=["oom-error", "killed"])
def test_isolated_probes_treat_out_of_memory_as_an_answer(crash):
    per_sample, cap = 1000, 11_500  # fits up to 11
    target = functools.partial(fake_allocation, per_sample=per_sample, cap=cap, crash=crash)
    probe = IsolatedProbe(target, cap_bytes=cap, timeout_s=120)
    assert probe(3).status == "ok"
    miss = probe(12)
    assert not miss.fits and miss.status == ("crashed" if crash else "oom")
    result = largest_batch(probe, start=10)
    assert result.largest == 11 and result.complete


@pytest.mark.slow
def test_real_training_probe_against_a_fake_cap():
    spec = ModelSpec("gpt", batch=1, input_size=16, depth=2, width=16, heads=2, classes=32)
    threads = torch.get_num_threads()
    try:
        need = {b: training_step_peak(StepProbe(spec), b) for b in (3, 4)}
    finally:
        torch.set_num_threads(threads)
    assert need[4] > need[3]
    cap = (need[3] + need[4]) // 2  # batch 3 fits, 4 does not
    probe = IsolatedProbe(StepProbe(spec, forward=FORWARDS["none"], cap_bytes=cap), cap_bytes=cap, timeout_s=120)
    result = largest_batch(probe, start=2, limit=64)
    assert result.largest == 3 and result.complete
    assert all(p.status in ("ok", "over_cap") for p in result.probes)


# --------------------------------------------------------------------------- the suite
def test_suite_cases_run_with_every_metric():
    overrides = {"depth": ["2"], "width": ["16"], "heads": ["2"], "input_size": ["16"], "vocab": ["32"],
                 "batch": ["2"], "mem_cap_mib": ["0"]}
    cases = plan_suite(Checkpointing, "quick", "cpu", overrides=overrides)
    assert {c.variant for c in cases} == set(FORWARDS)
    executor = CaseExecutor({"checkpointing": Checkpointing})
    for case in cases:
        record = executor.run(case)
        assert record.status == "ok", record.reason
        m = record.metrics
        assert m["grad_error"].value < 1e-6
        assert m["activation_memory"].value > 0 and m["total_memory"].value > m["activation_memory"].value
        assert "max_batch" not in m  # mem_cap_mib=0 turns the search off
        if case.variant == "full":
            assert m["recompute_flops"].value > 1.1
