"""Correctness of every attention variant, and the suite's quick profile on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.cli import main
from harness.metrics.numeric import relative_error
from suites.attention import Attention
from suites.common.attention_kernels import (
    attention_entropy,
    clustered_qk,
    elu_feature_map,
    flash_attention,
    flash_weights,
    linear_attention,
    orthogonal_random_features,
    performer_attention,
    reference_attention,
    sdpa_attention,
    softmax_attention,
    uniform_attention,
)


def qkv(n=100, d=16, b=2, h=3, seed=0, std=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (b, h, n, d)
    return tuple((s * torch.randn(shape, generator=g, dtype=dtype)) for s in (std, std, 1.0))


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_and_softmax_agree(causal):
    q, k, v = qkv(dtype=torch.float32)
    assert relative_error(sdpa_attention(q, k, v, causal), softmax_attention(q, k, v, causal)) < 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_float64_reference_equals_softmax(causal):
    q, k, v = qkv()
    ref = reference_attention(q, k, v, causal, max_bytes=10_000)  # forces many query blocks
    assert relative_error(ref, softmax_attention(q, k, v, causal)) < 1e-12


def naive_linear(q, k, v, causal):
    """out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j), j over all or j <= i."""
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    n = q.shape[-2]
    out = torch.empty_like(v)
    for i in range(n):
        last = i + 1 if causal else n
        w = (fq[..., i : i + 1, :] * fk[..., :last, :]).sum(-1)  # (b, h, last)
        out[..., i, :] = (w.unsqueeze(-1) * v[..., :last, :]).sum(-2) / w.sum(-1, keepdim=True)
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [37, 100, 128])  # not, and exactly, a multiple of the chunk
def test_linear_equals_its_defining_formula(causal, n):
    q, k, v = qkv(n=n)
    # the implementation adds eps=1e-6 to the denominator, as Katharopoulos et al.'s code does
    assert relative_error(linear_attention(q, k, v, causal), naive_linear(q, k, v, causal)) < 1e-6


def test_linear_causal_builds_no_n_by_n_matrix():
    q, k, v = qkv(n=1024, d=8, b=1, h=1, dtype=torch.float32)
    from harness.measure import measure_peak_memory

    peak, _ = measure_peak_memory(lambda: linear_attention(q, k, v, True), "cpu")
    assert peak < 1024 * 1024 * 4 / 4  # far below one float32 N x N matrix (4 MiB)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_error_falls_as_features_grow(causal):
    q, k, v = qkv(n=128, d=16, std=0.5)
    ref = reference_attention(q, k, v, causal)
    errors = []
    for m in (8, 64, 512, 4096):
        trials = []
        for seed in range(3):
            proj = orthogonal_random_features(m, 16, torch.Generator().manual_seed(seed), "cpu", torch.float64)
            trials.append(relative_error(performer_attention(q, k, v, causal, proj), ref))
        errors.append(sum(trials) / len(trials))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 < errors[0]


def test_orthogonal_features_are_orthogonal_within_blocks():
    proj = orthogonal_random_features(32, 16, torch.Generator().manual_seed(0), "cpu", torch.float64)
    block = proj[:16] / proj[:16].norm(dim=1, keepdim=True)
    assert torch.allclose(block @ block.T, torch.eye(16, dtype=torch.float64), atol=1e-10)


def naive_flash(q, k, v, causal, weights, chunk):
    """FLASH written position by position: relu^2 inside the chunk, linear over other chunks."""
    g, b = weights.gamma, weights.beta
    qq, qk, lq, lk = q * g[0] + b[0], k * g[1] + b[1], q * g[2] + b[2], k * g[3] + b[3]
    n = q.shape[-2]
    out = torch.zeros_like(v)
    for t in range(n):
        c0 = (t // chunk) * chunk
        c1 = t + 1 if causal else min(c0 + chunk, n)
        s = torch.relu((qq[..., t : t + 1, :] * qk[..., c0:c1, :]).sum(-1) / chunk) ** 2
        out[..., t, :] = (s.unsqueeze(-1) * v[..., c0:c1, :]).sum(-2)
        if causal:
            kv = torch.einsum("bhsd,bhse->bhde", lk[..., :c0, :], v[..., :c0, :]) / chunk
        else:
            kv = torch.einsum("bhsd,bhse->bhde", lk, v) / n
        out[..., t, :] += torch.einsum("bhd,bhde->bhe", lq[..., t, :], kv)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_flash_equals_its_defining_formula(causal):
    q, k, v = qkv(n=96)
    w = flash_weights(16, torch.Generator().manual_seed(0), "cpu", torch.float64)
    got = flash_attention(q, k, v, causal, w, chunk=32)
    assert relative_error(got, naive_flash(q, k, v, causal, w, chunk=32)) < 1e-10


def _variants_for_causality():
    proj = orthogonal_random_features(64, 16, torch.Generator().manual_seed(0), "cpu", torch.float64)
    w = flash_weights(16, torch.Generator().manual_seed(0), "cpu", torch.float64)
    return {
        "softmax": softmax_attention,
        "sdpa": sdpa_attention,
        "linear": linear_attention,
        "performer": lambda q, k, v, c: performer_attention(q, k, v, c, proj),
        "flash": lambda q, k, v, c: flash_attention(q, k, v, c, w, chunk=16),
        "uniform": uniform_attention,
    }


@pytest.mark.parametrize("name", ["softmax", "sdpa", "linear", "performer", "flash", "uniform"])
def test_causal_variants_do_not_look_ahead(name):
    attn = _variants_for_causality()[name]
    q, k, v = qkv(n=70, std=0.5)
    base = attn(q, k, v, True)
    t = 40
    k2, v2, q2 = k.clone(), v.clone(), q.clone()
    k2[..., t + 1 :, :] += 3.0 * torch.randn_like(k2[..., t + 1 :, :])
    v2[..., t + 1 :, :] += 3.0 * torch.randn_like(v2[..., t + 1 :, :])
    q2[..., t + 1 :, :] += 3.0 * torch.randn_like(q2[..., t + 1 :, :])
    moved = attn(q2, k2, v2, True)
    assert torch.allclose(base[..., : t + 1, :], moved[..., : t + 1, :], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(base[..., t + 1 :, :], moved[..., t + 1 :, :])  # the future did change


@pytest.mark.slow
def test_quick_profile_on_cpu_all_ok_and_exported(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "attention", "--profile", "quick", "--device", "cpu", "--out", str(out),
                 "--no-progress", "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    by_status: dict[str, set] = {}
    for r in records:
        by_status.setdefault(r["status"], set()).add(r["variant"])
    # what the declarations say a CPU cannot run is skipped with that reason; everything else runs
    unmet = {name: spec.unmet("cpu") for name, spec in Attention.variants().items()}
    assert by_status["ok"] == {name for name, why in unmet.items() if why is None}
    assert by_status.get("skipped", set()) == {name for name, why in unmet.items() if why}
    assert set(by_status) <= {"ok", "skipped"}
    for r in records:
        if r["status"] != "ok":
            assert r["reason"] == unmet[r["variant"]]
            continue
        m = r["metrics"]
        assert m["latency"]["unit"] == "ms" and len(m["latency"]["samples"]) == m["latency"]["n"] >= 1, r
        assert m["peak_memory"]["value"] > 0 and m["tflops"]["value"] > 0
        assert ("rel_error" in m) == (r["variant"] != "flash")
        if r["variant"] in ("softmax", "sdpa"):
            assert m["rel_error"]["value"] < 1e-5
        if r["variant"] != "flash":
            entropy = m["attention_entropy"]
            assert entropy["unit"] == "nats" and entropy["inputs"] == r["params"]["inputs"]
            assert 0 < entropy["value"] <= entropy["uniform_entropy"] + 1e-9
    peaked = {(r["params"]["inputs"], r["params"]["causal"]): r["metrics"]["attention_entropy"]["value"]
              for r in records if r["variant"] == "softmax"}
    for causal in (False, True):
        assert peaked[("clustered", causal)] < 0.6 * peaked[("gaussian", causal)]
    capsys.readouterr()
    assert main(["export", str(out), "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "### attention: latency [ms]" in text and "performer[features=16]" in text and "flash" in text
    assert "| uniform |" in text and "### attention: attention_entropy [nats]" in text


# --------------------------------------------------------------------------- inputs, entropy, uniform
@pytest.mark.parametrize("causal", [False, True])
def test_uniform_is_attention_with_equal_logits(causal):
    q, k, v = qkv(n=50)
    got = uniform_attention(q, k, v, causal)
    assert relative_error(got, softmax_attention(torch.zeros_like(q), k, v, causal)) < 1e-12
    assert torch.allclose(got[..., 9, :], v[..., : (10 if causal else 50), :].mean(-2))


def test_attention_entropy_matches_its_definition_and_bounds():
    q, k, _ = qkv(n=60, std=1.2)
    for causal in (False, True):
        p = torch.softmax(softmax_scores(q, k, causal), dim=-1)
        direct = float(-(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1).mean())
        entropy, uniform = attention_entropy(q, k, causal, max_bytes=5_000)  # many query blocks
        assert entropy == pytest.approx(direct, rel=1e-12)
        expected_uniform = sum(math.log(i) for i in range(1, 61)) / 60 if causal else math.log(60)
        assert uniform == pytest.approx(expected_uniform, rel=1e-12) and entropy < uniform
    zero = torch.zeros_like(q)
    assert attention_entropy(zero, k, False)[0] == pytest.approx(math.log(60), rel=1e-12)


def softmax_scores(q, k, causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores


def test_clustered_inputs_are_peaked_and_their_logit_scale_sharpens_them():
    shape = (1, 2, 256, 32)
    entropies = []
    for scale in (1.0, 4.0, 8.0):
        q, k = clustered_qk(shape, 0.5, scale, torch.Generator().manual_seed(0), "cpu")
        assert q.shape == k.shape == shape
        entropies.append(attention_entropy(q, k, False)[0])
        logits = q[0, 0] @ k[0, 0].T / math.sqrt(32)
        own_centre = logits.topk(256 // 16, dim=-1).values.mean(-1).median()  # about one centre's keys
        assert float(own_centre) == pytest.approx(scale, rel=0.25)  # same-centre logits are about the scale
    assert entropies[0] > entropies[1] > entropies[2]
    assert entropies[2] < 0.5 * math.log(256)
    gq, gk = qkv(n=256, d=32, b=1, h=2, std=0.5, dtype=torch.float32)[:2]
    assert attention_entropy(gq, gk, False)[0] > 0.99 * math.log(256)  # the Gaussian kind: nearly uniform


def test_approximations_fall_to_the_trivial_answer_on_peaked_inputs():
    """On nearly uniform Gaussian attention the trivial answer is already close; on clustered
    inputs it is far, and linear attention lands near it: the uniform row makes that visible."""
    shape = (1, 2, 256, 32)
    v = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    gq, gk = qkv(n=256, d=32, b=1, h=2, std=0.5, dtype=torch.float32)[:2]
    cq, ck = clustered_qk(shape, 0.5, 8.0, torch.Generator().manual_seed(0), "cpu")
    errs = {}
    for kind, (q, k) in {"gaussian": (gq, gk), "clustered": (cq, ck)}.items():
        ref = reference_attention(q, k, v, False)
        errs[kind] = (relative_error(uniform_attention(q, k, v, False), ref),
                      relative_error(linear_attention(q, k, v, False), ref))
    assert errs["gaussian"][0] < 0.3 and errs["clustered"][0] > 0.9
    assert errs["clustered"][1] > 0.9 * errs["clustered"][0]
