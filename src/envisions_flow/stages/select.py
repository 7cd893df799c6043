"""The pool (Eq. 2), the training sets U1 (Eq. 3) and U2 (Eq. 5), and Self-Rewarding's own judgments.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from envisions_flow.methods.selection import filter_trajectories, preference_pairs, select_training_sets, update_pool
from envisions_flow.stages.common import backend_for, stage_seed, task_list
from envisions_flow.stages.settings import JudgeSettings, PoolSettings, SelectSettings, settings_for
from envisions_flow.workflow import artifacts as art

log = logging.getLogger("envisions_flow")


def _judged(generations_path: str, executions_path: str) -> pd.DataFrame:
    generations = art.read_table(generations_path, art.GENERATIONS)
    executions = art.read_table(executions_path, art.EXECUTIONS)
    return generations.merge(executions[["id", "sample_idx", "b"]], on=["id", "sample_idx"], validate="one_to_one")


def build_pool(config: dict[str, Any], run: str, iteration: int, previous_pool: str | None, samples: str,
               samples_exec: str, refinements: str | None, refinements_exec: str | None, out: str) -> None:
    """Eq. 2 per (x, k), then the pool of the previous iteration (when the run keeps one) plus the chosen."""
    settings = settings_for(PoolSettings, config, run)
    environment = settings.train_environment()
    columns = ["id", "sample_idx", "question", "answer", "program", "b", "self_reward"]
    refined = _judged(refinements, refinements_exec)[columns] if settings.strategy.refine and refinements else None
    chosen = filter_trajectories(_judged(samples, samples_exec)[columns], refined, iteration)
    previous = art.read_table(previous_pool, art.POOL) if previous_pool and settings.strategy.pool else None
    pool = update_pool(previous, chosen, environment.program_key)
    art.write_table(pool, out, art.POOL)
    log.info("%s: %d trajectories (%d positive), %d refined chosen this iteration", out, len(pool),
             int((pool["b"] == 1).sum()), int((chosen["origin"] == "refine").sum()))


def judge(config: dict[str, Any], run: str, iteration: int, samples_path: str, model_dir: str, out: str) -> None:
    """Self-Rewarding: the policy scores each of its samples with the LLM-as-a-judge rubric."""
    from envisions_flow.methods.judging import score_all

    settings = settings_for(JudgeSettings, config, run)
    options = settings.self_rewarding
    samples = art.read_table(samples_path, art.GENERATIONS)
    started = time.monotonic()
    scores = score_all(backend_for(settings.generation, model_dir), task_list(samples), list(samples["program"]),
                       int(options.judge_samples), int(options.judge_max_new_tokens),
                       stage_seed(settings.generation.seed, iteration, 4, settings.seed_offset))
    rows = [{"id": row.id, "sample_idx": row.sample_idx, "score": score, "judgment": text}
            for row, (score, text) in zip(samples.itertuples(), scores)]
    art.write_table(rows, out, art.JUDGMENTS)
    log.info("%s: %d judged, %d without a score, in %.0f s", out, len(rows), sum(r["score"] is None for r in rows),
             time.monotonic() - started)


def select(config: dict[str, Any], run: str, iteration: int, pool_path: str, out_u1: str, out_u2: str,
           samples_path: str | None = None, judgments_path: str | None = None) -> None:
    """U1 (Eq. 3) and U2 (Eq. 5) from the pool; for DPO methods U2 holds the preference pairs.

    Runs labelled by their own judge take their pairs from the judgments of
    this iteration's samples instead of from the environment's verdicts.
    """
    settings = settings_for(SelectSettings, config, run)
    selection, strategy = settings.selection, settings.strategy
    pool = art.read_table(pool_path, art.POOL)
    seed = stage_seed(settings.generation.seed, iteration, 3, settings.seed_offset)
    n1, n2 = int(selection.n1), int(selection.n2)
    u1, u2 = select_training_sets(pool, n1, n2, selection.u1_rule, strategy.ranking, seed)
    if strategy.labels == "judge":
        from envisions_flow.methods.judging import judged_pairs

        u2 = judged_pairs(art.read_table(samples_path, art.GENERATIONS), art.read_table(judgments_path, art.JUDGMENTS),
                          n2)
    elif strategy.dpo:
        u2 = preference_pairs(pool, n2, strategy.ranking, seed)
    art.write_table(u1, out_u1, art.U1)
    art.write_table(u2, out_u2, art.U2)
    log.info("%s: %d positives for %d inputs; %s: %d pairs", out_u1, len(u1), u1["id"].nunique(), out_u2, len(u2))
