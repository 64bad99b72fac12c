"""Upsampling by 2: interpolation, transposed convolution, resize-convolution, pixel shuffle.

Question: what does each way of doubling a feature map's resolution cost in time and memory
on this device, and which ones print a checkerboard pattern on a smooth input?

Method: a smooth, positive feature map (1 + 0.5 x seeded noise on an eighth of the
resolution, bicubically upsampled: like image intensities) of ``batch`` x ``channels`` x
``size`` x ``size``, shared by every variant; each variant maps it to ``2 size`` x
``2 size`` with the same number of channels, timed as a forward pass or as a forward and
backward pass (``torch.autograd.grad`` with respect to the input and the weights).

Variants
- ``nearest``, ``bilinear``, ``bicubic``: ``torch.nn.functional.interpolate``, no weights.
- ``transposed_conv[kernel=3|4]``: ``ConvTranspose2d`` with stride 2 (padding 1; output
  padding 1 for kernel 3), PyTorch's default (random) initialisation.
- ``resize_conv``: nearest upsampling, then a 3x3 convolution (Odena et al. 2016).
- ``pixel_shuffle[init=random|icnr]``: a 3x3 convolution to 4x the channels, then
  ``PixelShuffle(2)`` (Shi et al. 2016), with PyTorch's initialisation or with ICNR (Aitken et
  al. 2017: the four sub-pixel kernels of a channel start equal, which makes the layer
  nearest upsampling followed by a convolution at initialisation).

``checkerboard``: the share of the output's spectral energy at the period-2 frequencies
(the three Nyquist bins (N/2, 0), (0, N/2), (N/2, N/2) of the 2-D DFT, per channel, summed
over the batch and channels), in percent, on the output with a 4-pixel border cropped so that
zero padding does not count. For the layers with weights it is the mean over ``inits``
random initialisations (seeds 0..inits-1; the timed layer is seed 0), with the standard
deviation stored beside it.

What to reproduce in kind (Odena et al. 2016, "Deconvolution and checkerboard artifacts";
Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"): a randomly
initialised transposed convolution with kernel 3 and stride 2 makes the strongest
checkerboard, kernel 4 (a multiple of the stride) a weaker one, and resize-convolution and
ICNR-initialised pixel shuffle essentially none, while pixel shuffle with random
initialisation has one. Interpolation has none: each of its two output phases sums to one.
Kernel 3 against kernel 4 depends on the initialisation: the uneven overlap of kernel 3 shows
when the taps share a sign (all-ones taps give a period-2 pattern with kernel 3 and none with
kernel 4), while for PyTorch's zero-mean random taps the expected response at the period-2
frequencies equals that at DC for both kernel sizes, so both land near the same share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness import Metric, Profile, Suite, Timing, variant
from suites.common.operators import draw_inputs, dtype_of, operator_workload

BORDER = 4  # output pixels cropped on each side before the spectrum (zero padding)


def smooth_field(shape, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """1 + 0.5 x Gaussian noise drawn on 1/8 of the resolution, bicubically upsampled."""
    b, c, h, w = shape
    coarse = torch.randn(b, c, max(2, h // 8), max(2, w // 8), generator=generator, device=device)
    return 1.0 + 0.5 * F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def checkerboard_share(y: torch.Tensor, border: int = BORDER) -> float:
    """Share (0..1) of the spectral energy of ``y`` (b, c, H, W) at the period-2 frequencies."""
    y = y.detach().to(torch.float64)
    if border:
        y = y[..., border:-border, border:-border]
    h, w = y.shape[-2:]
    if h % 2 or w % 2:
        y = y[..., : h - h % 2, : w - w % 2]
        h, w = y.shape[-2:]
    energy = torch.fft.fft2(y).abs().square()
    total = float(energy.sum())
    if total == 0.0:
        return 0.0
    nyquist = energy[..., h // 2, 0] + energy[..., 0, w // 2] + energy[..., h // 2, w // 2]
    return float(nyquist.sum()) / total


@dataclass(frozen=True)
class Upsampler:
    """How to build one variant's layer (None for the weight-free interpolations)."""

    kind: str
    kernel: int = 3
    init: str = "random"

    def build(self, channels: int, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        if self.kind in ("nearest", "bilinear", "bicubic"):
            return torch.nn.Upsample(scale_factor=2, mode=self.kind, **({} if self.kind == "nearest" else {"align_corners": False}))
        if self.kind == "transposed_conv":
            return torch.nn.ConvTranspose2d(channels, channels, self.kernel, stride=2, padding=1,
                                            output_padding=1 if self.kernel % 2 else 0)
        if self.kind == "resize_conv":
            return torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                       torch.nn.Conv2d(channels, channels, 3, padding=1))
        if self.kind == "pixel_shuffle":
            conv = torch.nn.Conv2d(channels, 4 * channels, 3, padding=1)
            if self.init == "icnr":
                icnr_(conv, scale=2)
            return torch.nn.Sequential(conv, torch.nn.PixelShuffle(2))
        raise ValueError(f"unknown upsampler {self.kind!r}")

    @property
    def has_weights(self) -> bool:
        return self.kind not in ("nearest", "bilinear", "bicubic")


def icnr_(conv: torch.nn.Conv2d, scale: int = 2) -> None:
    """ICNR (Aitken et al. 2017): the scale^2 sub-pixel kernels of every output channel start equal."""
    sub = scale * scale
    with torch.no_grad():
        base = torch.empty(conv.out_channels // sub, *conv.weight.shape[1:])
        torch.nn.init.kaiming_uniform_(base, a=5**0.5)  # PyTorch's default for Conv2d
        conv.weight.copy_(base.repeat_interleave(sub, dim=0))  # PixelShuffle reads channel c*sub + k
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[::sub].repeat_interleave(sub))


class Upsampling(Suite):
    """Interpolation vs transposed conv vs resize-conv vs pixel shuffle (random, ICNR)."""

    name = "upsampling"
    description = "2x upsampling layers: speed, memory, and the checkerboard they print on a smooth input"
    grid = {
        "batch": [8],
        "channels": [64],
        "size": [64],
        "dtype": ["float32"],
        "pass": ["forward", "forward+backward"],
        "inits": [16],
    }
    profiles = {
        "quick": Profile(
            grid={"batch": [2], "channels": [16], "size": [32], "inits": [2]},
            timing=Timing(warmup_s=0.01, budget_s=0.05, min_runs=5, rel_spread=0.05),
            description="2 CPU cores in seconds: 2 x 16 x 32 x 32, both passes, 2 initialisations",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"batch": [32], "channels": [64, 256], "size": [64, 128, 256], "dtype": ["float32", "bfloat16"]},
            timing=Timing(warmup_s=0.1, budget_s=1.0, min_runs=10, rel_spread=0.005),
            description="the GPU sweep: up to 32 x 256 x 256 x 256 in fp32 and bf16",
        ),
    }
    reference = "nearest"
    metrics = [
        Metric("checkerboard", "%", "lower",
               "share of the output's spectral energy at the period-2 frequencies, smooth input, random init",
               ratio=False, kind="quality"),
    ]
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=5, rel_spread=0.01)

    def prepare(self, params, device):
        shape = (params["batch"], params["channels"], params["size"], params["size"])
        out_shape = (*shape[:2], 2 * shape[2], 2 * shape[3])
        inputs = draw_inputs(shape, params["dtype"], params["pass"], device, out_shape=out_shape)
        gen = torch.Generator(device=device).manual_seed(4321)
        with torch.no_grad():
            inputs.x.copy_(smooth_field(shape, gen, device).to(inputs.x.dtype))
        return inputs

    def _upsampler(self, state, params, spec: Upsampler):
        state.cache["spec"] = spec
        layer = spec.build(params["channels"], seed=0).to(device=state.x.device, dtype=dtype_of(params["dtype"]))
        return operator_workload(layer, state, params=list(layer.parameters()))

    @variant()
    def nearest(self, state, params):
        """nearest-neighbour interpolation"""
        return self._upsampler(state, params, Upsampler("nearest"))

    @variant()
    def bilinear(self, state, params):
        """bilinear interpolation"""
        return self._upsampler(state, params, Upsampler("bilinear"))

    @variant()
    def bicubic(self, state, params):
        """bicubic interpolation"""
        return self._upsampler(state, params, Upsampler("bicubic"))

    @variant(params={"kernel": [3, 4]})
    def transposed_conv(self, state, params):
        """ConvTranspose2d, stride 2"""
        return self._upsampler(state, params, Upsampler("transposed_conv", kernel=params["kernel"]))

    @variant()
    def resize_conv(self, state, params):
        """nearest upsampling, then a 3x3 convolution"""
        return self._upsampler(state, params, Upsampler("resize_conv"))

    @variant(params={"init": ["random", "icnr"]})
    def pixel_shuffle(self, state, params):
        """3x3 convolution to 4C channels, then PixelShuffle(2)"""
        return self._upsampler(state, params, Upsampler("pixel_shuffle", init=params["init"]))

    def evaluate(self, state, params, variant, output):
        spec: Upsampler = state.cache["spec"]
        x = state.x.detach()
        seeds = range(params["inits"]) if spec.has_weights else range(1)
        shares = []
        with torch.no_grad():
            for seed in seeds:
                layer = spec.build(params["channels"], seed=seed).to(device=x.device, dtype=x.dtype)
                shares.append(100.0 * checkerboard_share(layer(x)))
        values = torch.tensor(shares, dtype=torch.float64)
        std = float(values.std()) if len(shares) > 1 else 0.0
        return {"checkerboard": {"value": float(values.mean()), "std": std, "n": len(shares)}}
