"""Eq. 2 (filtering), the pool update, Eq. 3 (U1) and Eq. 5 (U2) on hand-made trajectories."""

from __future__ import annotations

import pandas as pd
import pytest

from envisions_flow.environments.math import MathEnvironment
from envisions_flow.methods.selection import (
    AUTHORS,
    PAPER,
    choose,
    filter_trajectories,
    select_training_sets,
    update_pool,
)

KEY = MathEnvironment().program_key


@pytest.mark.parametrize(
    ("b", "r", "b_refined", "r_refined", "keeps_explored"),
    [
        (1, -2.0, 0, -0.1, True),  # only the original is correct
        (0, -0.1, 1, -2.0, False),  # only the refinement is correct
        (1, -0.5, 1, -0.9, True),  # both correct: higher self-reward wins
        (1, -0.9, 1, -0.5, False),
        (0, -0.5, 0, -0.9, True),  # both wrong: higher self-reward wins (a hard negative)
        (0, -0.9, 0, -0.5, False),
        (1, -0.5, 1, -0.5, False),  # a tie goes to the refinement ("otherwise")
    ],
)
def test_eq2_choice(b, r, b_refined, r_refined, keeps_explored):
    assert choose(b, r, b_refined, r_refined) is keeps_explored


def _generations(rows):
    return pd.DataFrame(rows, columns=["id", "sample_idx", "question", "answer", "program", "b", "self_reward"])


def test_filter_pairs_each_sample_with_its_own_refinement():
    explored = _generations([
        ("q1", 0, "Q1", "1", "return 1", 1, -0.5),
        ("q1", 1, "Q1", "1", "return 2", 0, -0.2),
    ])
    refined = _generations([
        ("q1", 1, "Q1", "1", "return 1  # fixed", 1, -0.8),
        ("q1", 0, "Q1", "1", "return 3", 0, -0.1),
    ])
    chosen = filter_trajectories(explored, refined, iteration=3).sort_values("sample_idx")
    assert chosen["program"].tolist() == ["return 1", "return 1  # fixed"]
    assert chosen["origin"].tolist() == ["explore", "refine"]
    assert chosen["b"].tolist() == [1, 1]
    assert chosen["self_reward"].tolist() == [-0.5, -0.8]
    assert (chosen["iteration"] == 3).all()


def _pool_rows(rows, iteration=1):
    frame = pd.DataFrame(rows, columns=["id", "program", "b", "self_reward"])
    frame["question"], frame["answer"], frame["origin"] = "Q", "1", "explore"
    frame["iteration"], frame["sample_idx"] = iteration, range(len(frame))
    return frame


def test_pool_accumulates_and_keeps_duplicates_once():
    first = update_pool(None, _pool_rows([("q1", "def solution():\n    return 1", 1, -0.6)]), KEY)
    second = update_pool(
        first,
        _pool_rows(
            [
                ("q1", "def solution():\n    # same program, other comment\n    return 1", 1, -0.3),
                ("q1", "def solution():\n    return 2", 0, -0.4),
                ("q2", "def solution():\n    return 1", 1, -0.5),
                ("q2", "   ", 0, -0.1),
            ],
            iteration=2,
        ),
        KEY,
    )
    assert len(second) == 3
    duplicate = second[(second["id"] == "q1") & (second["b"] == 1)]
    assert len(duplicate) == 1 and duplicate["self_reward"].item() == -0.3
    assert set(second["id"]) == {"q1", "q2"}
    assert "   " not in second["program"].tolist()


def _pool_for(positives, negatives, task_id="q"):
    rows = [(task_id, f"p{i}", 1, reward) for i, reward in enumerate(positives)]
    rows += [(task_id, f"n{i}", 0, reward) for i, reward in enumerate(negatives)]
    return _pool_rows(rows)


def test_u1_ranks_positives_by_self_reward_and_caps_at_n1():
    pool = _pool_for([-0.9, -0.1, -0.5, -0.3], [])
    u1, u2 = select_training_sets(pool, n1=2, n2=2, rule=PAPER)
    assert u1["positive"].tolist() == ["p1", "p3"]
    assert u1["rank"].tolist() == [1, 2]
    assert u2.empty  # no negatives, no pairs


def test_eq3_paper_takes_min_n1_and_all_positives():
    u1, u2 = select_training_sets(_pool_for([-0.2, -0.4], [-0.1]), n1=10, n2=2, rule=PAPER)
    assert u1["positive"].tolist() == ["p0", "p1"]
    assert u2.empty  # |S+| - N1 < 1: Eq. 5 leaves no positive for a pair


def test_eq5_pairs_positives_after_u1_with_best_negatives():
    pool = _pool_for([-0.1, -0.2, -0.3, -0.4], [-0.9, -0.5, -0.7])
    u1, u2 = select_training_sets(pool, n1=2, n2=2, rule=PAPER)
    assert u1["positive"].tolist() == ["p0", "p1"]
    assert list(zip(u2["positive"], u2["negative"])) == [("p2", "n1"), ("p3", "n2")]
    assert u2["rank"].tolist() == [1, 2]


def test_eq5_is_bounded_by_n2_and_by_negatives():
    pool = _pool_for([-0.1, -0.2, -0.3, -0.4, -0.5], [-0.9])
    _, u2 = select_training_sets(pool, n1=1, n2=3, rule=PAPER)
    assert list(zip(u2["positive"], u2["negative"])) == [("p1", "n0")]


def test_authors_rule_keeps_one_positive_for_a_pair():
    pool = _pool_for([-0.2, -0.4, -0.3], [-0.6, -0.8])
    u1, u2 = select_training_sets(pool, n1=10, n2=2, rule=AUTHORS)
    assert u1["positive"].tolist() == ["p0", "p2"]  # min(10, max(1, 3 - 1)) = 2
    assert list(zip(u2["positive"], u2["negative"])) == [("p1", "n0")]


def test_authors_rule_with_one_or_no_positive():
    u1, u2 = select_training_sets(_pool_for([-0.2], [-0.1]), n1=10, n2=2, rule=AUTHORS)
    assert (len(u1), len(u2)) == (1, 0)
    u1, u2 = select_training_sets(_pool_for([], [-0.1, -0.3]), n1=10, n2=2, rule=AUTHORS)
    assert (len(u1), len(u2)) == (0, 0)


def test_selection_is_per_input():
    pool = pd.concat([_pool_for([-0.1, -0.2], [-0.5], "a"), _pool_for([-0.3], [], "b")], ignore_index=True)
    u1, u2 = select_training_sets(pool, n1=10, n2=2, rule=AUTHORS)
    assert u1.groupby("id").size().to_dict() == {"a": 1, "b": 1}
    assert u2["id"].tolist() == ["a"]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="u1_rule"):
        select_training_sets(_pool_for([-0.1], []), 1, 1, rule="other")
