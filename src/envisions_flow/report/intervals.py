"""Uncertainty of accuracies: 95% intervals, paired differences between runs, and replicates over seeds.

A test set of n items gives an accuracy whose sampling error is large at demo sizes (±9 points
at n = 100 near 40%): every accuracy the workflow prints carries its interval, so a reader can
tell a gain from noise.

- one accuracy: the Wilson score interval (Wilson 1927), exact enough at small n and never
  outside [0, 1];
- the average over several test sets: a bootstrap over items, resampled within each test set;
- the difference of two runs on the same items: a paired bootstrap (the same resampled items for
  both) and, for 0/1 outcomes, McNemar's exact test on the discordant items;
- replicates of a run over seeds: the mean and its t interval across them.

numpy only (scipy is not a dependency of the light install). Bootstraps draw from a fixed seed,
so a report is the same every time it is built.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0

# Student's t 97.5% quantiles for 1-30 degrees of freedom (any statistics table).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)

Items = Mapping[str, Sequence[float]]  # test set -> per-item outcome (0/1, or a mean over replicates)


def wilson(correct: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion `correct / n`."""
    if n <= 0:
        return math.nan, math.nan
    p = correct / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile(df: int) -> float:
    """Student's t 97.5% quantile; past the table, its Cornish-Fisher expansion (error below 1e-4)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def replicate_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of a run's replicates and its 95% t interval (nan bounds for one)."""
    values = [float(value) for value in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
    half = t_quantile(len(values) - 1) * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _resampled_means(items: Items, rng: np.random.Generator, samples: int) -> np.ndarray:
    """Bootstrap replicates of the mean over test sets of each test set's mean, items drawn within each."""
    totals = np.zeros(samples)
    for outcomes in items.values():
        values = np.asarray(outcomes, dtype=float)
        drawn = rng.integers(0, len(values), size=(samples, len(values)))
        totals += values[drawn].mean(axis=1)
    return totals / len(items)


def average(items: Items) -> float:
    """The mean over test sets of each test set's mean outcome (Table 2's Avg.)."""
    return float(np.mean([np.mean(np.asarray(outcomes, dtype=float)) for outcomes in items.values()]))


def bootstrap_average(items: Items, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95% percentile interval of `average`, resampling items within each test set."""
    if not items or any(len(outcomes) == 0 for outcomes in items.values()):
        return math.nan, math.nan
    means = _resampled_means(items, np.random.default_rng(BOOTSTRAP_SEED), samples)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def _replicate_means(outcomes: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """Per bootstrap draw, each item's mean over a resample of the replicates (rows of `outcomes`)."""
    if outcomes.shape[0] == 1:
        return np.broadcast_to(outcomes[0], (samples, outcomes.shape[1]))
    chosen = rng.integers(0, outcomes.shape[0], size=(samples, outcomes.shape[0]))
    return outcomes[chosen].mean(axis=1)


def paired_difference(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      samples: int = BOOTSTRAP_SAMPLES) -> dict[str, float]:
    """A run's average accuracy minus a reference's, on the same items, with its 95% paired bootstrap
    interval, and McNemar's exact p-value when both were evaluated once (0/1 outcomes; nan otherwise).

    `pairs` maps a test set to (run outcomes, reference outcomes), arrays of shape (replicates, items)
    with the items in the same order. A bootstrap draw resamples the items of each test set, the
    same for both runs, and the replicates of each run: both sources of noise are in the interval.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = np.zeros(samples)
    point = []
    for ours, theirs in pairs.values():
        ours, theirs = np.atleast_2d(np.asarray(ours, dtype=float)), np.atleast_2d(np.asarray(theirs, dtype=float))
        if ours.shape[1] != theirs.shape[1] or ours.shape[1] == 0:
            raise ValueError("a paired difference needs the same, non-empty items for both runs")
        point.append(ours.mean(axis=0).mean() - theirs.mean(axis=0).mean())
        items = rng.integers(0, ours.shape[1], size=(samples, ours.shape[1]))
        ours_drawn = np.take_along_axis(_replicate_means(ours, rng, samples), items, axis=1)
        theirs_drawn = np.take_along_axis(_replicate_means(theirs, rng, samples), items, axis=1)
        draws += (ours_drawn - theirs_drawn).mean(axis=1)
    draws /= len(pairs)
    low, high = np.quantile(draws, [0.025, 0.975])
    result = {"difference": float(np.mean(point)), "low": float(low), "high": float(high), "p_mcnemar": math.nan}
    binary = all(ours.shape[0] == 1 == theirs.shape[0] and np.isin(ours, (0, 1)).all() and np.isin(theirs, (0, 1)).all()
                 for ours, theirs in ((np.atleast_2d(a), np.atleast_2d(b)) for a, b in pairs.values()))
    if binary:
        gained = sum(int(((np.ravel(a) == 1) & (np.ravel(b) == 0)).sum()) for a, b in pairs.values())
        lost = sum(int(((np.ravel(a) == 0) & (np.ravel(b) == 1)).sum()) for a, b in pairs.values())
        result["p_mcnemar"] = mcnemar_exact(gained, lost)
    return result


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar test: items right only in one run vs only in the other, Binomial(n, 1/2)."""
    discordant = gained + lost
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def format_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    """'32.5 [26.4, 39.3]' in percent (points for signed differences); the value alone without bounds."""
    if value is None or math.isnan(value):
        return "—"
    number = f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    if math.isnan(low) or math.isnan(high):
        return number
    return f"{number} [{100 * low:.1f}, {100 * high:.1f}]"


def format_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
