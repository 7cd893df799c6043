"""LLM-as-a-judge for the Self-Rewarding baseline (Yuan et al. 2024): the policy scores its own programs.

The prompt is the paper's additive 5-point rubric, worded for symbolic
solutions; the score is the number after the last "Score:". Pairs for DPO are
the highest- and lowest-scored candidates of an input, when their scores differ.
The environment's verdict is not used: that is what separates this baseline
from env-guided self-training.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from envisions_flow.environments.base import Messages, Task

JUDGE_TEMPLATE = """Review the user's question and the corresponding response using the additive 5-point scoring \
system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the response is relevant and provides a program related to the question, even if it is \
incomplete or contains some irrelevant content.
- Add another point if the program addresses a substantial portion of the question, but does not completely \
resolve it or has clear mistakes.
- Add a third point if the program is complete and would run, computing an answer to the question.
- Award a fourth point if the program is clearly written, follows the requested format, and its reasoning \
is correct step by step.
- Bestow a fifth point for a program that is impeccably tailored to the question, without extraneous \
content, reflecting expert knowledge, and certainly computes the right answer.

User: {question}

<response>
{program}
</response>

After examining the user's question and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
"""

_SCORE = re.compile(r"Score:\s*\**\s*([0-5](?:\.\d+)?)", re.IGNORECASE)


def judge_prompt(task: Task, program: str) -> Messages:
    return [{"role": "user", "content": JUDGE_TEMPLATE.format(question=task.question, program=program)}]


def parse_score(judgment: str) -> float | None:
    """The score after the last "Score:" (0-5), or None when the judge gave none."""
    scores = _SCORE.findall(judgment)
    return float(scores[-1]) if scores else None


def judged_pairs(samples: pd.DataFrame, judgments: pd.DataFrame, n2: int) -> pd.DataFrame:
    """Up to N2 (best ≻ worst) pairs per input by the judge's mean score; ties and unscored samples give none.

    The j-th pair takes the j-th highest and the j-th lowest scored distinct
    programs, as long as the chosen one scores strictly higher.
    """
    scored = samples.merge(judgments[["id", "sample_idx", "score"]], on=["id", "sample_idx"], validate="one_to_one")
    scored = scored[scored["score"].notna() & (scored["program"].str.strip() != "")]
    scored = scored.drop_duplicates(["id", "program"])
    rows = []
    for task_id, group in scored.groupby("id", sort=True):
        ranked = group.sort_values(["score", "self_reward"], ascending=[False, False], kind="stable")
        for rank in range(1, n2 + 1):
            if 2 * rank > len(ranked):
                break
            best, worst = ranked.iloc[rank - 1], ranked.iloc[-rank]
            if best["score"] <= worst["score"]:
                break
            rows.append({"id": task_id, "question": best["question"], "rank": rank, "positive": best["program"],
                         "negative": worst["program"], "positive_reward": float(best["score"]),
                         "negative_reward": float(worst["score"])})
    return pd.DataFrame(rows, columns=["id", "question", "rank", "positive", "negative", "positive_reward",
                                       "negative_reward"])


def load_warmup(path: str | Path) -> list[dict[str, str]]:
    """Warm-up SFT examples (instruction following, e.g. OpenAssistant): `prompt` and `completion` columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"self_rewarding.warmup: {path}: file not found")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=path.suffix == ".jsonl")
    missing = {"prompt", "completion"} - set(frame.columns)
    if missing:
        raise ValueError(f"self_rewarding.warmup: {path} has no column(s) {sorted(missing)}")
    return frame[["prompt", "completion"]].astype(str).to_dict("records")


def score_all(backend, tasks: Sequence[Task], programs: Sequence[str], samples: int, max_new_tokens: int,
              seed: int) -> list[tuple[float | None, str]]:
    """(mean score, first judgment) per program; greedy with one judge sample, sampled with several."""
    prompts = [backend.render(judge_prompt(task, program)) for task, program in zip(tasks, programs)]
    if samples == 1:
        outputs = [[generation] for generation in backend.greedy(prompts, max_new_tokens)]
    else:
        outputs = backend.sample(prompts, samples, max_new_tokens, seed)
    results = []
    for generations in outputs:
        scores = [score for score in (parse_score(g.text) for g in generations) if score is not None]
        results.append((sum(scores) / len(scores) if scores else None, generations[0].text))
    return results
