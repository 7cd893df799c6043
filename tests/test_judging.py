"""Self-Rewarding's LLM-as-a-judge: score parsing, judged pairs and the warm-up data."""

from __future__ import annotations

import pandas as pd
import pytest

from envisions_flow.environments.base import Task
from envisions_flow.methods.judging import judge_prompt, judged_pairs, load_warmup, parse_score


@pytest.mark.parametrize(("text", "score"), [
    ("The program is complete. Score: 4", 4.0),
    ("Score: 2\nOn reflection... Score: 3", 3.0),  # the last one counts
    ("**Score:** 5", 5.0),
    ("score: 1.5", 1.5),
    ("I would give it four points.", None),
    ("Score: 9", None),  # outside the rubric
])
def test_scores_are_read_from_the_last_score_line(text, score):
    assert parse_score(text) == score


def test_the_rubric_prompt_holds_question_and_program():
    content = judge_prompt(Task("a", "How many apples?", "7"), "def solution():\n    return 7")[0]["content"]
    assert "How many apples?" in content and "return 7" in content and 'Score: <total points>' in content


def _samples(rows):
    return pd.DataFrame(rows, columns=["id", "sample_idx", "question", "program", "self_reward"])


def test_pairs_join_best_and_worst_scored_and_skip_ties():
    samples = _samples([("x", 0, "Qx", "a", -0.1), ("x", 1, "Qx", "b", -0.2), ("x", 2, "Qx", "c", -0.3),
                        ("x", 3, "Qx", "d", -0.4), ("y", 0, "Qy", "e", -0.1), ("y", 1, "Qy", "f", -0.2),
                        ("z", 0, "Qz", "g", -0.1), ("z", 1, "Qz", "h", -0.2)])
    judgments = pd.DataFrame({"id": ["x", "x", "x", "x", "y", "y", "z", "z"], "sample_idx": [0, 1, 2, 3, 0, 1, 0, 1],
                              "score": [5.0, 1.0, 3.0, 2.0, 3.0, 3.0, 4.0, None]})
    pairs = judged_pairs(samples, judgments, n2=2)
    # x: 5 ≻ 1, then 3 ≻ 2; y: a tie gives nothing; z: the unscored sample cannot be paired
    assert pairs[["id", "positive", "negative", "positive_reward", "negative_reward"]].values.tolist() == [
        ["x", "a", "b", 5.0, 1.0], ["x", "c", "d", 3.0, 2.0]]
    assert judged_pairs(samples, judgments, n2=1)["positive"].tolist() == ["a"]


def test_warmup_data_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="self_rewarding.warmup: .*nope.jsonl: file not found"):
        load_warmup(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "hello"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl has no column\(s\) \['completion', 'prompt'\]"):
        load_warmup(bad)
    good = tmp_path / "oa.jsonl"
    good.write_text('{"prompt": "Say hi", "completion": "Hi!"}\n')
    assert load_warmup(good) == [{"prompt": "Say hi", "completion": "Hi!"}]
