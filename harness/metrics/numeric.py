"""Numeric error of an output against a higher-precision reference."""

from __future__ import annotations


def relative_error(out, ref) -> float:
    """||out - ref||_F / ||ref||_F computed in float64 (``ref`` any float tensor)."""
    import torch

    ref64 = ref.detach().to(torch.float64)
    diff = out.detach().to(device=ref64.device, dtype=torch.float64) - ref64
    denom = ref64.norm()
    if float(denom) == 0.0:
        return float(diff.norm())
    return float(diff.norm() / denom)

