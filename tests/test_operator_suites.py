"""Correctness of the operator suites: activations, normalization, upsampling, deformable_conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from suites.activations import ACTIVATIONS
from suites.common.operators import draw_inputs, error_metrics, operator_workload, reference_pass
from suites.deformable_conv import DeformableConv2d, conv_flops
from suites.normalization import PlainRMSNorm, seeded_layer
from suites.upsampling import Upsampler, checkerboard_share, icnr_, smooth_field


# --------------------------------------------------------------------------- common operator helpers
def test_backward_pass_returns_fresh_gradients_each_call():
    inputs = draw_inputs((1000,), "float32", "forward+backward", "cpu")
    work = operator_workload(F.silu, inputs)
    (y1, g1), (y2, g2) = work.fn(), work.fn()
    assert torch.equal(g1, g2) and inputs.x.grad is None  # nothing accumulates
    want = torch.sigmoid(inputs.x) * (1 + inputs.x * (1 - torch.sigmoid(inputs.x))) * inputs.grad_out
    assert torch.allclose(g1, want.detach(), atol=1e-6)


def test_error_metrics_against_float64():
    inputs = draw_inputs((4096,), "bfloat16", "forward+backward", "cpu")
    out = operator_workload(F.gelu, inputs).fn()
    errs = error_metrics(out, reference_pass(F.gelu, inputs))
    assert set(errs) == {"max_error", "mean_error", "grad_max_error", "grad_mean_error"}
    assert 0 < errs["mean_error"] < errs["max_error"] < 0.05  # bfloat16 rounding of O(1) values
    exact = draw_inputs((4096,), "float64", "forward", "cpu")
    assert error_metrics(operator_workload(F.gelu, exact).fn(), reference_pass(F.gelu, exact)) == {
        "max_error": 0.0, "mean_error": 0.0}


def test_bad_pass_is_refused():
    with pytest.raises(ValueError, match="pass must be one of"):
        draw_inputs((4,), "float32", "backward", "cpu")


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_errors_follow_the_format(name):
    errors = {}
    for dtype in ("float32", "bfloat16", "float16"):
        inputs = draw_inputs((1 << 14,), dtype, "forward", "cpu")
        out = operator_workload(ACTIVATIONS[name], inputs).fn()
        errors[dtype] = error_metrics(out, reference_pass(ACTIVATIONS[name], inputs))["mean_error"]
    if name == "relu":  # exact in every format: the reference sees the same rounded inputs
        assert errors == {"float32": 0.0, "bfloat16": 0.0, "float16": 0.0}
    else:
        assert errors["float32"] < 1e-6 < errors["float16"] < errors["bfloat16"] < 0.02, errors


def test_activation_definitions():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    assert torch.allclose(ACTIVATIONS["squared_relu"](x), torch.clamp(x, min=0) ** 2)
    assert torch.allclose(ACTIVATIONS["mish"](x), x * torch.tanh(F.softplus(x)))
    assert torch.allclose(ACTIVATIONS["gelu_erf"](x), x * 0.5 * (1 + torch.erf(x / 2**0.5)))
    assert (ACTIVATIONS["gelu_tanh"](x) - ACTIVATIONS["gelu_erf"](x)).abs().max() < 1e-3


# --------------------------------------------------------------------------- normalization
def test_plain_rmsnorm_equals_torch_rmsnorm():
    x = torch.randn(64, 128, dtype=torch.float64)
    plain, fused = seeded_layer("rmsnorm_plain", 128, 32).double(), seeded_layer("rmsnorm", 128, 32).double()
    assert isinstance(plain, PlainRMSNorm) and torch.equal(plain.weight, fused.weight)
    assert torch.allclose(plain(x), fused(x), atol=1e-12)
    want = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * plain.weight
    assert torch.allclose(plain(x), want, atol=1e-12)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm", "rmsnorm_plain", "batchnorm", "groupnorm"])
def test_normalization_layers_normalize(kind):
    layer = seeded_layer(kind, 64, 8)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()
    x = 3 + 2 * torch.randn(256, 64, dtype=torch.float64)
    y = layer.double()(x)
    if kind == "batchnorm":
        stats = y.mean(0), y.var(0, unbiased=False)
    elif kind == "groupnorm":
        g = y.view(256, 8, 8)
        stats = g.mean(-1), g.var(-1, unbiased=False)
    elif kind == "layernorm":
        stats = y.mean(-1), y.var(-1, unbiased=False)
    else:
        stats = torch.zeros(1), (y * y).mean(-1)
    assert torch.allclose(stats[0], torch.zeros_like(stats[0]), atol=1e-9)
    assert torch.allclose(stats[1], torch.ones_like(stats[1]), atol=1e-4)


# --------------------------------------------------------------------------- upsampling
def test_checkerboard_zero_for_constant_field_through_resize_conv():
    layer = Upsampler("resize_conv").build(8, seed=0)
    with torch.no_grad():
        y = layer(torch.full((2, 8, 16, 16), 0.7))
    assert checkerboard_share(y) < 1e-12
    assert checkerboard_share(torch.zeros(1, 1, 16, 16)) == 0.0


def test_checkerboard_share_of_known_patterns():
    h = w = 24
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = ((-1.0) ** (yy + xx)).expand(1, 1, h, w)
    assert abs(checkerboard_share(checker, border=0) - 1.0) < 1e-12
    mixed = 1.0 + 0.5 * checker  # energy 1 at DC, 0.25 at (N/2, N/2)
    assert abs(checkerboard_share(mixed, border=0) - 0.25 / 1.25) < 1e-12
    stripes = ((-1.0) ** xx).expand(1, 1, h, w)
    assert abs(checkerboard_share(stripes, border=0) - 1.0) < 1e-12


def test_transposed_conv_k3_stride2_prints_a_checkerboard_on_a_constant_field():
    layer = Upsampler("transposed_conv", kernel=3).build(4, seed=0)
    with torch.no_grad():
        y = layer(torch.ones(1, 4, 16, 16))
    assert checkerboard_share(y) > 0.01


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "bicubic", "resize_conv"])
def test_interpolation_and_resize_conv_are_nearly_free_of_checkerboard(kind):
    x = smooth_field((2, 4, 32, 32), torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert checkerboard_share(Upsampler(kind).build(4, seed=0)(x)) < 1e-3


def test_icnr_pixel_shuffle_is_nearest_then_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 12, 3, padding=1)
    icnr_(conv, scale=2)
    base = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        base.weight.copy_(conv.weight[::4])
        base.bias.copy_(conv.bias[::4])
        x = torch.randn(2, 3, 10, 10)
        got = F.pixel_shuffle(conv(x), 2)
        want = F.interpolate(base(x), scale_factor=2, mode="nearest")
    assert torch.allclose(got, want, atol=1e-6)


def test_upsamplers_double_the_resolution():
    x = torch.randn(1, 4, 12, 12)
    specs = [Upsampler(k) for k in ("nearest", "bilinear", "bicubic", "resize_conv")]
    specs += [Upsampler("transposed_conv", kernel=k) for k in (3, 4)]
    specs += [Upsampler("pixel_shuffle", init=i) for i in ("random", "icnr")]
    for spec in specs:
        assert spec.build(4, seed=0)(x).shape == (1, 4, 24, 24), spec


# --------------------------------------------------------------------------- deformable convolution
def test_deform_conv_with_zero_offsets_equals_conv():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 11, generator=g, dtype=torch.float64)
    w = torch.randn(7, 5, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    offset = torch.zeros(2, 18, 9, 11, dtype=torch.float64)
    want = F.conv2d(x, w, b, padding=1)
    assert torch.allclose(deform_conv2d(x, offset, w, b, padding=1), want, atol=1e-12)  # v1
    mask = torch.ones(2, 9, 9, 11, dtype=torch.float64)
    assert torch.allclose(deform_conv2d(x, offset, w, b, padding=1, mask=mask), want, atol=1e-12)  # v2


def test_deformable_layer_with_zeroed_offset_branch_equals_its_conv():
    torch.manual_seed(0)
    layer = DeformableConv2d(6, 3).double()
    with torch.no_grad():
        layer.offset.weight.zero_()
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    assert torch.allclose(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1), atol=1e-12)


def test_deformable_layer_offsets_are_about_a_pixel():
    torch.manual_seed(0)
    layer = DeformableConv2d(64, 3, modulated=True)
    with torch.no_grad():
        o = layer.offset(torch.randn(2, 64, 16, 16))
    assert o.shape[1] == 27 and 0.5 < float(o[:, :18].std()) < 1.5


def test_conv_flops_formula():
    assert conv_flops(2, 3, 4, 5, 3) == 2 * 2 * 5 * 5 * 4 * 3 * 9


def test_transposed_conv_uneven_overlap_with_same_sign_taps():
    """Odena et al.: kernel 3, stride 2 overlaps unevenly (a checkerboard); kernel 4 evenly (none)."""
    x = torch.ones(1, 1, 16, 16)
    shares = {}
    for k in (3, 4):
        layer = Upsampler("transposed_conv", kernel=k).build(1, seed=0)
        with torch.no_grad():
            layer.weight.fill_(1.0)
            layer.bias.zero_()
            shares[k] = checkerboard_share(layer(x))
    assert shares[3] > 0.01 and shares[4] < 1e-12, shares
