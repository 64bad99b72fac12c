"""The paired verdict (harness.measure.paired): ratios of rounds measured side by side."""

from __future__ import annotations

import math
import random

import pytest

from harness.measure.paired import PairedRounds, batch_value, paired_verdict


def test_batch_value_is_the_lower_decile():
    assert batch_value([5.0]) == 5.0
    assert batch_value([4.0, 6.0]) == 5.0
    xs = [float(i) for i in range(1, 12)]  # 1..11: the 10th percentile is 2
    assert batch_value(list(reversed(xs))) == pytest.approx(2.0)
    assert batch_value([1.0, math.nan, 3.0, 2.0]) == pytest.approx(1.2)
    assert math.isnan(batch_value([]))


def _ratios(true_ratio: float, noise: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [true_ratio * math.exp(rng.gauss(0, noise)) for _ in range(n)]


def test_a_clear_slowdown_is_slower_and_a_speedup_faster():
    v = paired_verdict(_ratios(1.10, 0.01, 10, 1))
    assert v.verdict == "slower" and v.low > 1.0 and v.ratio > 1.05 and v.rounds == 10
    assert paired_verdict(_ratios(0.8, 0.01, 10, 2)).verdict == "faster"


def test_no_change_is_same_once_the_interval_is_inside_the_threshold():
    assert paired_verdict(_ratios(1.0, 0.005, 10, 3)).verdict == "same"


def test_a_change_below_the_threshold_is_same_not_slower():
    v = paired_verdict(_ratios(1.03, 0.002, 15, 4))
    assert v.low > 1.0 and v.verdict == "same"


def test_a_wide_interval_is_noisy_and_few_rounds_decide_nothing():
    assert paired_verdict(_ratios(1.06, 0.2, 10, 5)).verdict == "noisy"
    # five rounds of a 2x slowdown: no interval with 95% coverage yet
    v = paired_verdict([2.0] * 5)
    assert v.verdict == "noisy" and v.coverage < 0.95
    assert paired_verdict([2.0] * 6).verdict == "slower"


def test_an_outlier_round_does_not_hide_a_slowdown():
    ratios = _ratios(3.0, 0.01, 15, 6)
    ratios[3] = 0.5  # one round of B caught in a fast state, or of A in a slow one
    assert paired_verdict(ratios).verdict == "slower"
    # at 10 rounds the 99% interval is the whole range: the case takes more rounds first
    assert paired_verdict(ratios[:10]).verdict == "noisy"


def test_the_threshold_is_respected():
    ratios = _ratios(1.08, 0.005, 10, 7)
    assert paired_verdict(ratios, threshold=0.05).verdict == "slower"
    assert paired_verdict(ratios, threshold=0.10).verdict == "same"


def test_rounds_with_a_nonpositive_or_nonfinite_side_are_left_out():
    rounds = PairedRounds()
    for a, b in [(1.0, 1.1), (0.0, 1.0), (1.0, math.inf), (1.0, 1.1)]:
        rounds.add(a, b)
    assert rounds.ratios == pytest.approx([1.1, 1.1])


def test_a_and_a_false_alarms_are_rare_at_the_engines_noise():
    """A/A on 2000 synthetic cases with 3% log-normal noise per round: no 'slower' at 10 rounds."""
    flagged = sum(paired_verdict(_ratios(1.0, 0.03, 10, s)).verdict == "slower" for s in range(2000))
    assert flagged == 0
