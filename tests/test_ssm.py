"""Correctness of the ssm suite's scans, layers and selective copying task."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.metrics.numeric import relative_error
from suites.common.ssm_layers import (
    CopyModel,
    CopyTask,
    S4DLayer,
    S6Layer,
    build_layer,
    chunked_scan,
    copy_accuracy,
    default_chunk,
    fft_causal_conv,
    parallel_scan,
    selective_copying_batch,
    sequential_scan,
    train_copy_model,
)


def selective_inputs(b=2, length=37, d=6, n=4, seed=0, dtype=torch.float64):
    """Input-dependent delta, B, C as Mamba has them: (b, l, d), (b, l, 1, n)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, length, d, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(b, length, d, generator=g, dtype=dtype))
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 3 - 0.1
    B = torch.randn(b, length, 1, n, generator=g, dtype=dtype)
    C = torch.randn(b, length, 1, n, generator=g, dtype=dtype)
    return u, delta, A, B, C


def naive_recurrence(u, delta, A, B, C):
    """The recurrence written out per batch, channel and state, in float64."""
    u, delta, A, B, C = (t.to(torch.float64) for t in (u, delta, A, B, C))
    b, length, d = u.shape
    n = A.shape[-1]
    B, C = B.expand(b, length, d, n), C.expand(b, length, d, n)
    y = torch.zeros(b, length, d, dtype=torch.float64)
    for i in range(b):
        for c in range(d):
            h = torch.zeros(n, dtype=torch.float64)
            for t in range(length):
                h = torch.exp(delta[i, t, c] * A[c]) * h + delta[i, t, c] * B[i, t, c] * u[i, t, c]
                y[i, t, c] = (C[i, t, c] * h).sum()
    return y


def test_sequential_scan_is_the_recurrence():
    args = selective_inputs(length=9)
    assert relative_error(sequential_scan(*args), naive_recurrence(*args)) < 1e-13


@pytest.mark.parametrize("length", [1, 2, 7, 37, 64, 129])
@pytest.mark.parametrize("scan", ["parallel", "chunked"])
def test_scans_equal_the_float64_sequential_reference(scan, length):
    args = selective_inputs(length=length)
    ref = sequential_scan(*args)
    fn = {"parallel": parallel_scan, "chunked": chunked_scan}[scan]
    assert relative_error(fn(*args), ref) < 1e-12  # float64: the same numbers
    args32 = [t.float() for t in args]
    assert relative_error(fn(*args32), ref) < 1e-5  # float32 against the float64 reference
    assert relative_error(sequential_scan(*args32), ref) < 1e-5


@pytest.mark.parametrize("chunk", [1, 3, 8, 37, 64])
def test_chunked_scan_any_chunk_size(chunk):
    args = selective_inputs(length=37)
    assert relative_error(chunked_scan(*args, chunk=chunk), sequential_scan(*args)) < 1e-12


def test_scans_have_the_reference_gradients():
    args = [t.clone().requires_grad_(t.dim() > 1) for t in selective_inputs(length=21)]
    grads = {}
    for name, fn in (("sequential", sequential_scan), ("parallel", parallel_scan), ("chunked", chunked_scan)):
        out = fn(*args)
        grads[name] = torch.autograd.grad(out, args, torch.ones_like(out))
    for name in ("parallel", "chunked"):
        for got, want in zip(grads[name], grads["sequential"]):
            assert relative_error(got, want) < 1e-10


def test_half_precision_is_scanned_in_float32():
    args = selective_inputs(length=16)
    out = chunked_scan(*[t.to(torch.bfloat16) for t in args])
    assert out.dtype == torch.bfloat16
    assert relative_error(out, sequential_scan(*args)) < 0.05


def test_default_chunk_is_a_power_of_two_near_sqrt():
    assert default_chunk(4096) == 64 and default_chunk(1) == 1 and default_chunk(100) in (8, 16)


def test_fft_causal_conv_is_the_causal_convolution():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 19, 3, generator=g, dtype=torch.float64)
    k = torch.randn(3, 19, generator=g, dtype=torch.float64)
    want = torch.zeros_like(u)
    for t in range(19):
        for s in range(t + 1):
            want[:, t] += k[:, s] * u[:, t - s]
    assert relative_error(fft_causal_conv(u, k), want) < 1e-12


@pytest.mark.parametrize("form", ["sequential", "parallel", "chunked"])
def test_s4d_fft_and_recurrent_forms_agree(form):
    torch.manual_seed(0)
    layer = S4DLayer(16, 8).double()
    x = torch.randn(2, 50, 16, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(layer(x, "fft"), layer(x, form)) < 1e-12
        assert relative_error(layer.float()(x.float(), "fft"), layer.double()(x, "sequential")) < 1e-5


@pytest.mark.parametrize("kind,forms", [("s4d", ["fft", "sequential", "parallel", "chunked"]),
                                        ("mamba", ["sequential", "parallel", "chunked"]),
                                        ("attention", ["sdpa"])])
def test_layers_are_causal(kind, forms):
    torch.manual_seed(0)
    layer = build_layer(kind, 64, 8).double()
    x = torch.randn(1, 40, 64, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 25:] += torch.randn_like(x2[:, 25:])
    with torch.no_grad():
        for form in forms:
            a, b = layer(x, form), layer(x2, form)
            assert torch.allclose(a[:, :25], b[:, :25], atol=1e-12), form
            assert not torch.allclose(a[:, 25:], b[:, 25:]), form


def test_mamba_is_selective_and_s4d_is_not():
    """S6's delta, B, C change with the input; S4D's kernel does not depend on it."""
    torch.manual_seed(0)
    s6 = S6Layer(16, 4)
    x = torch.randn(1, 10, 16)
    d1, _, b1, _ = s6.scan_inputs(x)
    d2, _, b2, _ = s6.scan_inputs(2 * x)
    assert not torch.allclose(d1, d2) and not torch.allclose(b1, b2)
    s4d = S4DLayer(16, 4)
    assert s4d.kernel(10).shape == (16, 10)


def test_selective_copying_batch():
    task = CopyTask(context=20, n_memorize=5, vocab=6)
    inputs, targets = selective_copying_batch(task, 50, torch.Generator().manual_seed(0))
    assert inputs.shape == (50, 25) and targets.shape == (50, 5)
    assert (inputs[:, 20:] == task.vocab + 1).all()  # the markers
    context = inputs[:, :20]
    assert ((context > 0).sum(1) == 5).all()  # exactly n_memorize data tokens among noise
    for row, want in zip(context, targets):
        assert torch.equal(row[row > 0], want)  # in order of appearance
    assert targets.min() >= 1 and targets.max() <= task.vocab


def test_training_is_seeded_and_deterministic():
    task = CopyTask(context=12, n_memorize=3, vocab=4, d_model=16, d_state=4, steps=3, batch=8, eval_sequences=32)
    a, b = train_copy_model("mamba", task), train_copy_model("mamba", task)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    acc = copy_accuracy(a, task, "chunked")
    assert 0.0 <= acc <= 1.0
    assert acc == copy_accuracy(a, task, "sequential") == copy_accuracy(a, task, "parallel")


def test_copy_model_gives_positions_to_attention_only():
    task = CopyTask(context=12, n_memorize=3, d_model=16, d_state=4)
    assert CopyModel("attention", task).positions is not None
    assert CopyModel("mamba", task).positions is None and CopyModel("s4d", task).positions is None


def test_quick_profile_on_cpu(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "ssm", "--profile", "quick", "--device", "cpu", "--out", str(out), "--threads", "1",
                 "--no-progress", "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    ok = {r["variant"] for r in records if r["status"] == "ok"}
    assert ok == {"attention", "s4d_fft", "s4d_recurrent", "mamba_sequential", "mamba_parallel", "mamba_chunked"}
    skipped = [r for r in records if r["status"] == "skipped"]
    assert {r["variant"] for r in skipped} == {"mamba_fused"} and all(r["reason"] for r in skipped)
    accuracy = {}
    for r in records:
        if r["status"] != "ok":
            continue
        m = r["metrics"]
        assert m["rel_error"]["value"] < 1e-4, r["variant"]
        assert m["throughput"]["unit"] == "tokens/s" and m["peak_memory"]["value"] > 0
        accuracy.setdefault(r["variant"].split("_")[0], set()).add(m["copy_accuracy"]["value"])
    # every form of one layer scores the trained model alike
    assert all(len(v) == 1 for v in accuracy.values()), accuracy
    capsys.readouterr()
    assert main(["export", str(out), "--format", "markdown", "--metric", "copy_accuracy"]) == 0
    assert "### ssm: copy_accuracy [%]" in capsys.readouterr().out


@pytest.mark.slow
def test_selective_copying_gap_at_the_default_budget():
    """Gu & Dao 2023, Table 1 in kind: the selective layer copies, the time-invariant one cannot."""
    from dataclasses import replace

    from suites.ssm import COPY_TASK, SSM

    task = replace(COPY_TASK, steps=SSM.grid["copy_steps"][0])
    s4d = copy_accuracy(train_copy_model("s4d", task), task, "fft")
    mamba = copy_accuracy(train_copy_model("mamba", task), task, "chunked")
    assert mamba > 0.65 and s4d < 0.55 and mamba - s4d > 0.25, (s4d, mamba)


def test_blocked_reference_attention_equals_sdpa():
    from suites.common.ssm_layers import blocked_causal_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g, dtype=torch.float64) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert relative_error(blocked_causal_attention(q, k, v, max_bytes=5_000), want) < 1e-12  # many blocks
    layer = build_layer("attention", 64, 8).double()
    x = torch.randn(1, 30, 64, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(layer(x, "blocked"), layer(x, "sdpa")) < 1e-12
