"""The CUDA timer's logic on a scripted device: the queue stays full, one synchronisation per
batch, the per-sample hook outside the events, host latency from a back-to-back window."""

from __future__ import annotations

import pytest

from cuda_fakes import FakeCudaApi, FakeGpu
from harness import Timing
from harness.measure.timing import CudaEventTimer, batch_size_for, host_window, measure_time


def timer_on(gpu: FakeGpu, cold: bool = False, max_batch: int = 1000) -> CudaEventTimer:
    return CudaEventTimer(flush_l2=cold, api=FakeCudaApi(gpu), wall_clock=gpu.wall_s, max_batch=max_batch)


def batches_of(log: list[str]) -> list[list[str]]:
    """The log cut after each synchronisation."""
    out, cur = [], []
    for op in log:
        cur.append(op)
        if op == "sync":
            out.append(cur)
            cur = []
    return out


def test_one_synchronisation_per_batch_and_the_hook_outside_the_events():
    gpu = FakeGpu(host_ms_per_op=0.001)
    timer = timer_on(gpu, cold=True)
    samples = timer.samples_ms(lambda: gpu.kernel(0.25), 4, before=lambda: gpu.host_work(0.5, "hook"))
    assert samples == [pytest.approx(0.25)] * 4
    (batch,) = batches_of(gpu.log)  # one batch, one synchronisation, at its end
    # an untimed first call keeps the device busy while the first start event is recorded
    assert batch == ["hook", "kernel"] + ["hook", "flush", "record", "kernel", "record"] * 4 + ["sync"]


def test_measure_time_batches_and_stopping_rule_sees_each_batch():
    gpu = FakeGpu(host_ms_per_op=0.002)
    timer = timer_on(gpu)
    timing = Timing(warmup_s=0.01, min_warmup=2, budget_s=1.0, min_runs=5, rel_spread=0.005)
    hooks = []
    result = measure_time(lambda: gpu.kernel(0.1), timing, timer, before=lambda: hooks.append(1))
    syncs = gpu.log.count("sync")
    assert syncs == result.warmup_runs + result.batches  # warm-up calls one by one, then one per batch
    # Warm-up calls wait for the host (an idle GPU: 0.1 ms + one 0.002 ms launch); their last
    # sample sizes the batches to about 50 ms of device time.
    assert result.batch_size == batch_size_for(0.102, 1000) == 491
    assert result.stopped_by == "stable" and result.batches == 1
    assert result.samples_ms == [pytest.approx(0.1)] * result.stats.n
    assert len(hooks) == result.warmup_runs + result.batches + result.stats.n  # + one untimed call per batch
    for batch in batches_of(gpu.log)[result.warmup_runs:]:
        starts = [i for i, op in enumerate(batch) if op == "record"][::2]
        assert batch[:2] == ["kernel", "record"]
        assert all(batch[i + 1] == "kernel" and batch[i + 2] == "record" for i in starts)


def test_queue_kept_full_hides_host_dispatch_from_device_samples():
    # Each host operation (event record, launch) costs 0.002 ms; the kernel takes 0.05 ms.
    timing = Timing(warmup_s=0.0, min_warmup=1, budget_s=0.05, min_runs=5, rel_spread=0.01)
    gpu = FakeGpu(host_ms_per_op=0.002)
    batched = measure_time(lambda: gpu.kernel(0.05), timing, timer_on(gpu))
    assert batched.samples_ms == [pytest.approx(0.05)] * batched.stats.n
    # Synchronising after every sample (batches of one) stamps the start event on an idle
    # device that then waits for the host's launch: the sample includes dispatch.
    idle = FakeGpu(host_ms_per_op=0.002)
    synced = measure_time(lambda: idle.kernel(0.05), timing, timer_on(idle, max_batch=1))
    assert synced.stats.median == pytest.approx(0.052)


def test_host_latency_is_the_wall_clock_per_back_to_back_call():
    timing = Timing(budget_s=0.05)
    for host_ms, kernel_ms, expected in ((0.002, 0.05, 0.05), (0.02, 0.01, 0.02)):
        gpu = FakeGpu(host_ms_per_op=host_ms)  # device-bound, then launch-bound
        timer = timer_on(gpu)
        host = host_window(lambda: gpu.kernel(kernel_ms), timer, kernel_ms, timing)
        assert host.stats.median == pytest.approx(expected, rel=0.01)  # + the last kernel, spread over the batch
        assert host.total_calls == 3 * host.calls and host.calls > 1


def test_host_window_reads_energy_around_back_to_back_calls_only():
    gpu = FakeGpu(watts=250.0)
    timer = timer_on(gpu)
    for _ in range(7):  # warm-up that spends energy before the window
        gpu.kernel(5.0)
    timing = Timing(budget_s=0.2)
    host = host_window(lambda: gpu.kernel(2.0), timer, 2.0, timing, energy=gpu.energy_mj)
    assert host.energy_mj / host.total_calls == pytest.approx(2.0 * 250.0)  # 500 mJ per 2 ms call


def test_cpu_path_keeps_single_sample_batches():
    from harness.measure import CpuTimer

    assert CpuTimer.max_batch == 1 and batch_size_for(0.001, 1) == 1
