"""Deformable convolution (v1 and v2) against a plain and a dilated convolution of the same shape.

Question: what does sampling a 3x3 convolution at learned, fractional positions cost over a
plain convolution on this device, in time and in memory, for a forward pass and for a
forward and backward pass?

Method: a seeded Gaussian feature map of ``batch`` x ``channels`` x ``size`` x ``size``,
shared by every variant; every variant maps ``channels`` to ``channels`` with a ``kernel``
x ``kernel`` window and keeps the resolution; the backward pass is ``torch.autograd.grad``
with respect to the input and all weights.

Variants
- ``conv`` (reference): ``Conv2d`` (padding kernel // 2).
- ``dilated``: ``Conv2d`` with dilation 2 (padding 2 (kernel // 2)): the same weights and
  FLOPs, a receptive field of 2 kernel - 1, the fixed-grid alternative to learned offsets.
- ``deform_v1``: deformable convolution (Dai et al. 2017) through
  ``torchvision.ops.deform_conv2d``, with its offset branch: a 3x3 ``Conv2d`` predicting
  2 k^2 offsets per position from the input.
- ``deform_v2``: modulated deformable convolution (Zhu et al. 2019): the offset branch also
  predicts k^2 masks (through a sigmoid) that scale each sampled value.

The offset branch starts with small random weights (standard deviation 1 / sqrt(9 C)), so the
offsets of the benchmark input are about one pixel, fractional, as in a trained network
(with zero offsets the sampling positions would fall on the grid, which flatters the
gather). With zero offsets (and a mask of ones) a deformable convolution equals the plain one;
the suite's tests check that.

In kind (Dai et al. 2017; Zhu et al. 2019): the deformable layer's arithmetic is close to a
convolution's plus a small offset branch, but its bilinear gathers (im2col at fractional
positions) make it several times slower than a cuDNN/oneDNN convolution, and its im2col
buffer adds memory; v2's mask adds little over v1.

FLOPs: the formula 2 B H W C_out C_in k^2 for the main convolution, plus the offset branch's
convolution for the deformable variants (bilinear interpolation arithmetic not counted);
x3 for forward+backward. Metrics: latency, peak memory, TFLOP/s, and pixels/s.
"""

from __future__ import annotations

import math

import torch

from harness import Profile, Suite, Timing, variant
from suites.common.operators import draw_inputs, dtype_of, operator_workload


class DeformableConv2d(torch.nn.Module):
    """A deformable convolution with its offset (and, for v2, mask) branch."""

    def __init__(self, channels: int, kernel: int = 3, modulated: bool = False):
        # torchvision is imported here, not with the module: importing it takes about a second,
        # which every run would pay for listing the suites
        from torchvision.ops import deform_conv2d

        super().__init__()
        self.deform_conv2d = deform_conv2d
        self.kernel = kernel
        self.modulated = modulated
        conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2)  # PyTorch's default init
        self.weight, self.bias = conv.weight, conv.bias
        taps = kernel * kernel
        self.offset = torch.nn.Conv2d(channels, (3 if modulated else 2) * taps, 3, padding=1)
        with torch.no_grad():
            self.offset.weight.normal_(0.0, 1.0 / math.sqrt(9 * channels))
            self.offset.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.offset(x)
        taps = self.kernel * self.kernel
        mask = torch.sigmoid(o[:, 2 * taps :]) if self.modulated else None
        return self.deform_conv2d(x, o[:, : 2 * taps], self.weight, self.bias, padding=self.kernel // 2, mask=mask)


def conv_flops(batch: int, c_in: int, c_out: int, size: int, kernel: int) -> float:
    return 2.0 * batch * size * size * c_out * c_in * kernel * kernel


class DeformableConv(Suite):
    """Conv vs dilated conv vs deformable conv v1 (offsets) and v2 (offsets and mask)."""

    name = "deformable_conv"
    description = "torchvision deform_conv2d v1 and v2 against plain and dilated convolution: speed and memory"
    grid = {
        "batch": [8],
        "channels": [64, 256],
        "size": [56],
        "kernel": [3],
        "dtype": ["float32"],
        "pass": ["forward", "forward+backward"],
    }
    profiles = {
        "quick": Profile(
            grid={"batch": [1], "channels": [16], "size": [24]},
            timing=Timing(warmup_s=0.01, budget_s=0.05, min_runs=5, rel_spread=0.05),
            description="2 CPU cores in seconds: 1 x 16 x 24 x 24, both passes",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"batch": [32], "channels": [64, 256, 512], "size": [28, 56, 112], "dtype": ["float32", "float16"]},
            timing=Timing(warmup_s=0.1, budget_s=1.0, min_runs=10, rel_spread=0.005),
            description="the GPU sweep: ResNet stage shapes in fp32 and fp16",
        ),
    }
    reference = "conv"
    metrics = []
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device):
        shape = (params["batch"], params["channels"], params["size"], params["size"])
        return draw_inputs(shape, params["dtype"], params["pass"], device)

    def _layer(self, state, params, layer: torch.nn.Module, offset_channels: int = 0):
        b, c, s, k = params["batch"], params["channels"], params["size"], params["kernel"]
        flops = conv_flops(b, c, c, s, k) + conv_flops(b, c, offset_channels, s, 3)
        if params["pass"] == "forward+backward":
            flops *= 3
        layer = layer.to(device=state.x.device, dtype=dtype_of(params["dtype"]))
        return operator_workload(layer, state, params=list(layer.parameters()), flops=flops,
                                 items=b * s * s, items_unit="pixels/s")

    @variant()
    def conv(self, state, params):
        """Conv2d"""
        k = params["kernel"]
        return self._layer(state, params, torch.nn.Conv2d(params["channels"], params["channels"], k, padding=k // 2))

    @variant()
    def dilated(self, state, params):
        """Conv2d with dilation 2"""
        k = params["kernel"]
        layer = torch.nn.Conv2d(params["channels"], params["channels"], k, padding=2 * (k // 2), dilation=2)
        return self._layer(state, params, layer)

    @variant()
    def deform_v1(self, state, params):
        """deform_conv2d with predicted offsets"""
        k = params["kernel"]
        return self._layer(state, params, DeformableConv2d(params["channels"], k), offset_channels=2 * k * k)

    @variant()
    def deform_v2(self, state, params):
        """deform_conv2d with predicted offsets and masks"""
        k = params["kernel"]
        return self._layer(state, params, DeformableConv2d(params["channels"], k, modulated=True),
                           offset_channels=3 * k * k)

