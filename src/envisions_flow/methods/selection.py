"""Trajectory filtering (Eq. 2), the candidate pool, and the training sets U1 (Eq. 3) and U2 (Eq. 5)."""

from __future__ import annotations

from typing import Callable

import pandas as pd

PAPER = "paper"
AUTHORS = "authors"
SELF_REWARD = "self_reward"
RANDOM = "random"


def choose(b: int, r: float, b_refined: int, r_refined: float) -> bool:
    """Eq. 2: True keeps the explored a_k, False the refined ã_k."""
    if b == 1 and b_refined == 0:
        return True
    if b == b_refined and r > r_refined:
        return True
    return False


def filter_trajectories(explored: pd.DataFrame, refined: pd.DataFrame | None, iteration: int) -> pd.DataFrame:
    """One trajectory T*_k per (x, k): columns of the pool schema.

    `explored` and `refined` hold id, sample_idx, question, answer, program,
    b and self_reward; rows pair up on (id, sample_idx). Without refinements
    (methods that do not self-refine) every explored trajectory is kept.
    """
    if refined is None:
        refined = explored.assign(b=0, self_reward=float("-inf"))
    paired = explored.merge(refined, on=["id", "sample_idx"], suffixes=("", "_refined"), validate="one_to_one")
    keep_explored = [
        choose(int(row.b), float(row.self_reward), int(row.b_refined), float(row.self_reward_refined))
        for row in paired.itertuples()
    ]
    out = pd.DataFrame(
        {
            "id": paired["id"],
            "question": paired["question"],
            "answer": paired["answer"],
            "program": paired["program"].where(keep_explored, paired["program_refined"]),
            "b": paired["b"].where(keep_explored, paired["b_refined"]).astype("int8"),
            "self_reward": paired["self_reward"].where(keep_explored, paired["self_reward_refined"]),
            "origin": ["explore" if keep else "refine" for keep in keep_explored],
            "iteration": iteration,
            "sample_idx": paired["sample_idx"],
        }
    )
    return out


def update_pool(previous: pd.DataFrame | None, chosen: pd.DataFrame, program_key: Callable[[str], str]) -> pd.DataFrame:
    """The pool of iteration i-1 plus this iteration's trajectories; an (x, program) pair is kept once.

    Of duplicates the one with the highest self-reward stays (ties: the earliest).
    Empty programs never enter the pool: there is nothing in them to learn.
    """
    chosen = chosen[chosen["program"].str.strip() != ""].copy()
    chosen["program_key"] = [program_key(program) for program in chosen["program"]]
    frames = [frame for frame in (previous, chosen) if frame is not None and len(frame)]
    if not frames:
        return chosen.iloc[0:0]
    pool = pd.concat(frames, ignore_index=True)
    pool["_order"] = range(len(pool))
    pool = pool.sort_values(["self_reward", "_order"], ascending=[False, True], kind="stable")
    pool = pool.drop_duplicates(["id", "program_key"], keep="first").sort_values("_order")
    return pool.drop(columns="_order").reset_index(drop=True)


def _ranked(pool: pd.DataFrame, ranking: str, seed: int) -> pd.DataFrame:
    """The pool ordered per input by self-reward (best first), or at random (the w/o self-rewards ablation)."""
    if ranking == SELF_REWARD:
        return pool.sort_values(["id", "self_reward"], ascending=[True, False], kind="stable")
    if ranking == RANDOM:
        shuffled = pool.sample(frac=1.0, random_state=seed)
        return shuffled.sort_values("id", kind="stable")
    raise ValueError(f"strategy.ranking: must be {SELF_REWARD!r} or {RANDOM!r}, got {ranking!r}")


def select_training_sets(pool: pd.DataFrame, n1: int, n2: int, rule: str = AUTHORS, ranking: str = SELF_REWARD,
                         seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """U1 (positives ranked by self-reward) and U2 (negative → positive pairs), per input x.

    With rule="paper", |U1| = min(N1, |S+|) (Eq. 3) and the pairs of Eq. 5 use
    the positives ranked after U1, so they exist only when |S+| > N1. With
    rule="authors" (what the authors' code ran), |U1| = min(N1, max(1, |S+| - 1)),
    which leaves a positive for a pair whenever there are two or more.
    """
    if rule not in {PAPER, AUTHORS}:
        raise ValueError(f"selection.u1_rule: must be {PAPER!r} or {AUTHORS!r}, got {rule!r}")
    u1_rows, u2_rows = [], []
    for task_id, group in _ranked(pool, ranking, seed).groupby("id", sort=True):
        positives = group[group["b"] == 1]
        negatives = group[group["b"] != 1]
        if rule == PAPER:
            size1 = min(n1, len(positives))
        else:
            size1 = min(n1, max(1, len(positives) - 1)) if len(positives) else 0
        size2 = max(0, min(n2, len(positives) - size1, len(negatives)))
        question = group["question"].iloc[0]
        for rank, row in enumerate(positives.head(size1).itertuples(), start=1):
            u1_rows.append({"id": task_id, "question": question, "rank": rank,
                            "positive": row.program, "self_reward": row.self_reward})
        u2_rows += _pairs(task_id, question, positives.iloc[size1:size1 + size2], negatives.head(size2))
    return _u1_frame(u1_rows), _u2_frame(u2_rows)


def preference_pairs(pool: pd.DataFrame, n2: int, ranking: str = SELF_REWARD, seed: int = 0) -> pd.DataFrame:
    """DPO pairs for the reinforced baselines: the j-th best positive ≻ the j-th best negative, j ≤ N2.

    Unlike Eq. 5 the chosen side may also be in U1: a DPO pair needs a positive
    and a negative for x, not a positive left over after U1.
    """
    rows = []
    for task_id, group in _ranked(pool, ranking, seed).groupby("id", sort=True):
        positives, negatives = group[group["b"] == 1], group[group["b"] != 1]
        size = min(n2, len(positives), len(negatives))
        rows += _pairs(task_id, group["question"].iloc[0], positives.head(size), negatives.head(size))
    return _u2_frame(rows)


def _pairs(task_id: str, question: str, positives: pd.DataFrame, negatives: pd.DataFrame) -> list[dict]:
    return [{"id": task_id, "question": question, "rank": rank, "positive": positive.program,
             "negative": negative.program, "positive_reward": positive.self_reward,
             "negative_reward": negative.self_reward}
            for rank, (positive, negative) in enumerate(zip(positives.itertuples(), negatives.itertuples()), start=1)]


def _u1_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "question", "rank", "positive", "self_reward"])


def _u2_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "question", "rank", "positive", "negative", "positive_reward",
                                       "negative_reward"])
