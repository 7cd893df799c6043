"""The paper's analysis metrics (Section 5.2, Appendix B): exploration, stability, Δlog p, diversity."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from envisions_flow.environments.base import Environment, Task


def exploration_metrics(solved: Mapping[int, set[str]]) -> pd.DataFrame:
    """Per iteration: |M_i|, newly solved inputs, and EA / STB (Appendix B, Eq. 7) per step and accumulated.

    `solved` maps iteration i to M_i, the inputs with at least one correct
    trajectory in that iteration. The step terms are
    |M_i minus earlier| / |earlier| and |M_i ∩ earlier| / |earlier|, with
    earlier = M_1 ∪ ... ∪ M_{i-1}; they are undefined (NaN) while nothing was
    solved before, and EA / STB sum the defined terms from i = 2 on.
    """
    rows, earlier = [], set()
    ea_total = stb_total = 0.0
    for iteration in sorted(solved):
        current = set(solved[iteration])
        new = current - earlier
        ea = stb = float("nan")
        if earlier and iteration > min(solved):
            ea, stb = len(new) / len(earlier), len(current & earlier) / len(earlier)
            ea_total += ea
            stb_total += stb
        rows.append({"iteration": iteration, "solved": len(current), "newly_solved": len(new),
                     "exploratory_ability": ea, "stability": stb,
                     "exploratory_ability_cumulative": ea_total, "stability_cumulative": stb_total})
        earlier |= current
    return pd.DataFrame(rows)


def correct_unique(pool: pd.DataFrame) -> int:
    """Correct trajectories with distinct normalised programs per input (the pool keeps one per key)."""
    positives = pool[pool["b"] == 1]
    return int(positives[["id", "program_key"]].drop_duplicates().shape[0])


def log_prob_margins(model_dir: str | Path, pairs: pd.DataFrame, environment: Environment) -> pd.DataFrame:
    """Mean per-token log-prob of a⁺ and of a⁻ given the zero-shot prompt for x, under `model_dir`.

    Per-token means (the self-reward's scale) keep long and short programs comparable. On a GPU
    the model runs in bf16 (as it samples), loaded straight onto the device; on a CPU in fp32.
    The log-softmax is taken in fp32 either way.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from envisions_flow.generation.base import render_chat
    from envisions_flow.generation.transformers_backend import sequence_logprob

    columns = ["id", "rank", "positive_logp", "negative_logp", "margin"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if on_gpu else torch.float32,
                                                 device_map="cuda" if on_gpu else None).eval()

    def mean_logprob(prompt: str, program: str) -> float:
        ids = tokenizer(environment.render_solution(program) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        return sequence_logprob(model, tokenizer, prompt, ids) / max(1, len(ids))

    rows = []
    for row in pairs.itertuples():
        prompt = render_chat(tokenizer, environment.explore_prompt(Task(row.id, row.question, ""), few_shot=False))
        positive, negative = mean_logprob(prompt, row.positive), mean_logprob(prompt, row.negative)
        rows.append({"id": row.id, "rank": row.rank, "positive_logp": positive, "negative_logp": negative,
                     "margin": positive - negative})
    return pd.DataFrame(rows, columns=columns)
