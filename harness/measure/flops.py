"""Counting floating-point operations with torch.utils.flop_counter.FlopCounterMode."""

from __future__ import annotations

from typing import Any, Callable


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention kernels) and its result."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = fn()
    return int(counter.get_total_flops()), out
