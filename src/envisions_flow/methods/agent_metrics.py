"""Agent metrics of the web-agent self-improvement paper (Patel et al.): capability score, VERTEX_DTW, CIs.

Functional correctness counts solved tasks, but many tasks are instances of one intent template,
and some templates paraphrase each other; a model can gain accuracy by solving more instances of
what it could already do. The paper therefore also reports (Table 3):

- Capability score (§3.2): templates are grouped in order; a template joins the first existing
  group holding any member with cosine similarity > 0.60 (strict), else it starts a new group.
  A capability scores 1 when at least one of its tasks succeeded, 0 otherwise, averaged over all
  groups. A task the trivial agent (§4.1: always `stop [N/A]`) also solves never counts, so that
  agent scores exactly 0 (Table 3: 0.00).
- VERTEX_DTW (§3.3, Eq. 1): each step is embedded, the test trajectory is aligned with a reference
  trajectory by dynamic time warping (DTW) under cosine distance, and the aligned pairs'
  similarities are averaged over the path with a distance decay, corrected by the trivial agent's
  score z_rand (footnote 5), clipped to [0, 1], and maximised over the task's references.

Our reading of Eq. 1, where the paper leaves room:
- Similarity: with one embedding per step on each side, the cross-similarity term MMD~² of Dinu
  et al. (2024) reduces to the similarity of the aligned pair; we use cosine similarity, the
  measure DTW aligns under.
- Decay: the text calls it a *linear* decay that shrinks aligned pairs "far apart in the
  original trajectories"; the equation writes 1/(1+|i−j|) on absolute indices, which penalises
  every length difference (a 10-step trajectory aligned with a 3-step one cannot score well
  even when it repeats the reference's steps), contrary to the section's aim of comparing
  trajectories of different lengths. The default `decay="relative"` is linear in relative
  positions, 1 − |i/(m−1) − j/(n−1)| (a one-step trajectory sits at position 0, its start);
  `decay="paper"` is the equation's 1/(1+|i−j|).
- Baseline: Eq. 1 subtracts z_rand inside the per-step clip, which gives the trivial agent 0
  only if z_rand bounds every step. We correct the path mean instead, (s − z)/(1 − z) clipped to
  [0, 1], with z the trivial trajectory's own best raw score against the same references
  (`trivial_baseline`), so the trivial agent scores exactly 0 and a perfect match still 1. If
  z ≥ 1 (the trivial agent matches a reference exactly) nothing can beat it and the score is 0.

Confidence intervals: Table 3 gives bootstrap intervals (Efron 1979) without naming the
resampling unit. `bootstrap_ci` is a seeded percentile bootstrap over any unit; `metric_summary`
resamples tasks for accuracy and VERTEX_DTW and capability groups (each with all its tasks) for
the capability score, the unit that score averages over, and records the units beside the values.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

T = TypeVar("T")
Decay = Literal["relative", "paper"]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def capability_groups(embeddings: np.ndarray, threshold: float = 0.60) -> list[int]:
    """Group index per template: join the first group with any member of cosine similarity > threshold."""
    unit = _unit_rows(embeddings)
    similarity = unit @ unit.T
    members: list[list[int]] = []
    groups: list[int] = []
    for index in range(len(unit)):
        group = next((g for g, rows in enumerate(members) if np.any(similarity[index, rows] > threshold)), None)
        if group is None:
            group = len(members)
            members.append([])
        members[group].append(index)
        groups.append(group)
    return groups


def _task_arrays(groups: Sequence[int], success: Sequence[bool], trivial: Sequence[bool]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Group ids and "succeeded and not trivial" flags per task, checked for equal length."""
    if not len(groups) == len(success) == len(trivial):
        raise ValueError(f"groups, success and trivial differ in length: {len(groups)}, {len(success)}, "
                         f"{len(trivial)}")
    counts = np.asarray(success, dtype=bool) & ~np.asarray(trivial, dtype=bool)
    return np.asarray(groups), counts


def capability_score(groups: Sequence[int], success: Sequence[bool], trivial: Sequence[bool]) -> float:
    """Fraction of capability groups with a successful task the trivial agent does not also solve."""
    ids, counts = _task_arrays(groups, success, trivial)
    if len(ids) == 0:
        return float("nan")
    return float(np.unique(ids[counts]).size / np.unique(ids).size)


def functional_correctness(success: Sequence[bool]) -> float:
    """Fraction of tasks solved."""
    return float(np.mean(np.asarray(success, dtype=float))) if len(success) else float("nan")


def dtw_path(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Classic DTW alignment of two embedded trajectories under cosine distance: (index in a, index in b) pairs.

    Steps (1,0), (0,1), (1,1); on equal cost the diagonal wins, then a step in `a`.
    """
    ua, ub = _unit_rows(a), _unit_rows(b)
    m, n = len(ua), len(ub)
    if m == 0 or n == 0:
        raise ValueError("DTW needs two non-empty trajectories")
    cost = 1.0 - ua @ ub.T
    total = np.full((m + 1, n + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
    path = [(m - 1, n - 1)]
    i, j = m, n
    while (i, j) != (1, 1):
        moves = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
        i, j = min(moves, key=lambda move: total[move])
        path.append((i - 1, j - 1))
    return path[::-1]


def _decay(i: np.ndarray, j: np.ndarray, m: int, n: int, decay: Decay) -> np.ndarray:
    """Weight of an aligned pair by how far apart its steps sit in their own trajectories."""
    if decay == "paper":
        return 1.0 / (1.0 + np.abs(i - j))
    if decay == "relative":
        position_i = i / (m - 1) if m > 1 else np.zeros_like(i, dtype=float)
        position_j = j / (n - 1) if n > 1 else np.zeros_like(j, dtype=float)
        return 1.0 - np.abs(position_i - position_j)
    raise ValueError(f"unknown decay {decay!r} (relative or paper)")


def aligned_similarity(test: np.ndarray, reference: np.ndarray, decay: Decay = "relative") -> float:
    """Uncorrected VERTEX_DTW against one reference: mean over the DTW path of cosine similarity × decay."""
    ut, ur = _unit_rows(test), _unit_rows(reference)
    pairs = np.asarray(dtw_path(ut, ur))
    i, j = pairs[:, 0], pairs[:, 1]
    similarity = np.einsum("td,td->t", ut[i], ur[j])
    return float(np.mean(similarity * _decay(i, j, len(ut), len(ur), decay)))


def trivial_baseline(trivial: np.ndarray, references: Sequence[np.ndarray], decay: Decay = "relative") -> float:
    """z_rand of a task: the trivial (do-nothing) trajectory's best uncorrected score against its references."""
    if not references:
        return float("nan")
    return max(aligned_similarity(trivial, reference, decay) for reference in references)


def vertex_dtw(test: np.ndarray, references: Sequence[np.ndarray], baseline: float = 0.0,
               decay: Decay = "relative") -> float:
    """VERTEX_DTW of a test trajectory: max over references of (s − baseline)/(1 − baseline) clipped to [0, 1].

    `baseline` is the task's `trivial_baseline` (0 leaves scores uncorrected); no references give nan.
    """
    if not references:
        return float("nan")
    if baseline >= 1.0:
        return 0.0
    best = max(aligned_similarity(test, reference, decay) for reference in references)
    return float(np.clip((best - baseline) / (1.0 - baseline), 0.0, 1.0))


def bootstrap_ci(values_by_unit: Sequence[T], statistic: Callable[[list[T]], float], samples: int, seed: int,
                 level: float = 0.95) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of `statistic` over units resampled with replacement."""
    units = list(values_by_unit)
    if not units or samples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(samples, len(units)))
    estimates = np.array([statistic([units[k] for k in draw]) for draw in draws], dtype=float)
    if np.all(np.isnan(estimates)):
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(estimates, [tail, 100.0 - tail])
    return float(low), float(high)


def _number(value: float) -> float | None:
    """A value for JSON: None when undefined (nan)."""
    return None if np.isnan(value) else float(value)


def _interval(low_high: tuple[float, float]) -> list[float] | None:
    """A CI as a JSON-ready list, None when undefined."""
    return None if any(np.isnan(low_high)) else [low_high[0], low_high[1]]


def metric_summary(success: Sequence[bool], trivial: Sequence[bool], groups: Sequence[int],
                   vertex_scores: Sequence[float], samples: int, seed: int, level: float = 0.95) -> dict[str, Any]:
    """Table 3's metrics with bootstrap CIs, ready for eval.json.

    Tasks without references (nan VERTEX_DTW) are left out of the VERTEX_DTW mean (`vertex_tasks`
    counts the rest). Undefined values and CIs (no tasks, no references) are None.
    """
    ids, counts = _task_arrays(groups, success, trivial)
    if len(vertex_scores) != len(ids):
        raise ValueError(f"{len(vertex_scores)} VERTEX_DTW scores for {len(ids)} tasks")
    solved = np.asarray(success, dtype=float)
    vertex = np.asarray(vertex_scores, dtype=float)
    vertex = vertex[~np.isnan(vertex)]
    demonstrated = [bool(np.any(counts[ids == group])) for group in np.unique(ids)]

    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    return {
        "accuracy": _number(functional_correctness(success)),
        "capability_score": _number(capability_score(groups, success, trivial)),
        "vertex_dtw": float(np.mean(vertex)) if vertex.size else None,
        "ci": {
            "accuracy": _interval(bootstrap_ci(list(solved), mean, samples, seed, level)),
            "capability_score": _interval(bootstrap_ci(demonstrated, mean, samples, seed, level)),
            "vertex_dtw": _interval(bootstrap_ci(list(vertex), mean, samples, seed, level)),
        },
        "ci_level": level,
        "bootstrap_samples": samples,
        "bootstrap_seed": seed,
        "bootstrap_unit": {"accuracy": "task",
                           "capability_score": "capability group (resampled with all its tasks)",
                           "vertex_dtw": "task with references"},
        "tasks": len(ids),
        "capabilities": len(demonstrated),
        "vertex_tasks": int(vertex.size),
    }
