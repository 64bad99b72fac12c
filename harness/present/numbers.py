"""Numbers as people read them: rounded for tables and reports (never when saved)."""

from __future__ import annotations

import math


def fmt_number(v: float | None) -> str:
    """A value to read: 4 significant digits, scientific notation from 1e5 up and below 1e-3."""
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


def ratio_text(ratio: float | None, low: float | None = None, high: float | None = None) -> str:
    """``1.318x [1.309, 1.332]``: a ratio B/A with its interval where it has a finite one."""
    if ratio is None:
        return ""
    if not math.isfinite(ratio):
        return "inf"
    text = f"{ratio:.3f}x"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text
