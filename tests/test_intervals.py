"""95% intervals, paired differences and replicates (report/intervals.py), against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envisions_flow.report import intervals


def test_wilson_matches_the_published_intervals():
    # Newcombe (1998), Stat. Med. 17:857, Table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775
    assert intervals.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert intervals.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    # by hand: 40/100, z = 1.96: centre (0.4 + z²/200) / (1 + z²/100) = 0.40370, half 0.09430
    assert intervals.wilson(40, 100) == pytest.approx((0.3094, 0.4980), abs=1e-4)
    assert intervals.wilson(10, 10)[1] == pytest.approx(1.0) and all(math.isnan(x) for x in intervals.wilson(0, 0))


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    # 1 item gained, 9 lost: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    assert intervals.mcnemar_exact(1, 9) == 22 / 1024
    assert intervals.mcnemar_exact(9, 1) == 22 / 1024
    # 20 gained, 5 lost: 2 * (1 + 25 + 300 + 2300 + 12650 + 53130) / 2^25
    assert intervals.mcnemar_exact(20, 5) == pytest.approx(2 * 68406 / 2**25, rel=1e-12)
    assert intervals.mcnemar_exact(0, 0) == 1.0 and intervals.mcnemar_exact(3, 3) == 1.0


def test_t_interval_across_replicates():
    # mean 0.35, sd 0.05, t(2) = 4.303: half-width 4.303 * 0.05 / sqrt(3) = 0.12422
    mean, low, high = intervals.replicate_interval([0.30, 0.35, 0.40])
    assert mean == pytest.approx(0.35) and (low, high) == pytest.approx((0.22578, 0.47422), abs=1e-5)
    assert intervals.t_quantile(40) == pytest.approx(2.0211, abs=1e-4)  # past the table
    assert intervals.t_quantile(120) == pytest.approx(1.9799, abs=1e-4)
    single = intervals.replicate_interval([0.4])
    assert single[0] == 0.4 and math.isnan(single[1]) and math.isnan(single[2])


def test_bootstrap_of_an_average_agrees_with_the_normal_approximation():
    # 80 of 200 right: 0.4 ± 1.96 * sqrt(0.4 * 0.6 / 200) = [0.332, 0.468]
    low, high = intervals.bootstrap_average({"a": [1] * 80 + [0] * 120})
    assert (low, high) == pytest.approx((0.332, 0.468), abs=0.006)
    # two test sets: the average's interval is narrower than either set's own
    items = {"a": [1] * 80 + [0] * 120, "b": [1] * 120 + [0] * 80}
    assert intervals.average(items) == pytest.approx(0.5)
    both = intervals.bootstrap_average(items)
    assert both[1] - both[0] < high - low and both[0] < 0.5 < both[1]
    assert intervals.bootstrap_average(items) == both  # a fixed seed: the same report every time


def test_paired_difference_pairs_items_and_counts_discordant_ones():
    # run A gains 20 items, loses 5, 30 right and 45 wrong in both: +15 points
    ours = np.array([1] * 20 + [0] * 5 + [1] * 30 + [0] * 45)
    theirs = np.array([0] * 20 + [1] * 5 + [1] * 30 + [0] * 45)
    result = intervals.paired_difference({"t": (ours[None], theirs[None])})
    assert result["difference"] == pytest.approx(0.15)
    assert result["p_mcnemar"] == pytest.approx(intervals.mcnemar_exact(20, 5))
    # d = +1 (20), -1 (5), 0 (75): sd of the mean sqrt((0.25 - 0.15^2) / 100) = 0.0477, half-width 0.0935
    assert (result["low"], result["high"]) == pytest.approx((0.15 - 0.0935, 0.15 + 0.0935), abs=0.01)
    # unpaired, the same accuracies (0.50 vs 0.35) would give a half-width of 1.96 * 0.069 = 0.135
    assert result["high"] - result["low"] < 2 * 0.12

    # three identical replicates each: the same difference and about the same interval, no McNemar
    replicated = intervals.paired_difference({"t": (np.stack([ours] * 3), np.stack([theirs] * 3))})
    assert replicated["difference"] == pytest.approx(0.15) and math.isnan(replicated["p_mcnemar"])
    assert replicated["low"] == pytest.approx(result["low"], abs=0.015)

    # replicates that disagree widen it: the seed's noise is in the interval too
    noisy = np.stack([ours, np.roll(ours, 7), theirs])
    spread = intervals.paired_difference({"t": (noisy, np.stack([theirs] * 3))})
    assert spread["high"] - spread["low"] > result["high"] - result["low"]

    with pytest.raises(ValueError, match="same, non-empty items"):
        intervals.paired_difference({"t": (ours[None], theirs[None, :50])})


def test_formats():
    assert intervals.format_interval(0.325, 0.264, 0.393) == "32.5 [26.4, 39.3]"
    assert intervals.format_interval(0.2, 0.1, 0.3, signed=True) == "+20.0 [10.0, 30.0]"
    assert intervals.format_interval(0.2, math.nan, math.nan) == "20.0"
    assert intervals.format_p(0.0004) == "< 0.001" and intervals.format_p(0.0215) == "0.021"
