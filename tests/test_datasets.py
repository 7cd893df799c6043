"""Loaders normalise every source to (id, question, answer, source) and name what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from envisions_flow.datasets.loaders import DataError, load_tasks, with_preset
from envisions_flow.datasets.word_problems import generate_word_problems
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.environments.web import WebEnvironment


def test_generator_is_seeded_and_train_test_disjoint():
    train = generate_word_problems({"n": 200, "split": "train", "seed": 1}, "train")
    again = generate_word_problems({"n": 200, "split": "train", "seed": 1}, "train")
    test = generate_word_problems({"n": 100, "split": "test", "seed": 1}, "test")
    pd.testing.assert_frame_equal(train, again)
    assert not set(train["question"]) & set(test["question"])
    assert train["question"].is_unique and train["id"].is_unique


def _recompute(question: str) -> int:
    """An independent reading of each template's arithmetic."""
    n = [int(x) for x in re.findall(r"\d+", question)]
    if "more" in question and "gets" in question:
        return n[0] + n[1]
    if "gave" in question:
        return n[0] - n[1]
    if "bags of" in question:
        return n[0] * n[1]
    if "equally among" in question:
        return n[0] // n[1]
    if "change" in question:
        return n[2] - n[0] * n[1]
    if "boxes with" in question:
        return n[0] + n[1] * n[2]
    if "times as many" in question:
        return n[0] + n[0] * n[1]
    if "pages" in question:
        return n[0] * n[1] + n[2]
    raise AssertionError(question)


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_generated_answers_are_computed(difficulty):
    tasks = generate_word_problems({"n": 150, "split": "train", "seed": 7, "difficulty": difficulty}, "t")
    for question, answer in zip(tasks["question"], tasks["answer"]):
        assert int(answer) == _recompute(question), question


def test_jsonl_with_field_mapping_and_answer_format(tmp_path: Path):
    path = tmp_path / "gsm.jsonl"
    rows = [{"q": "What is 2+2?", "a": "Add them.\n#### 4"}, {"q": "What is 1,000+1?", "a": "#### 1,001"}]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    spec = {"kind": "file", "path": str(path), "fields": {"question": "q", "answer": "a"}, "answer_format": "gsm8k",
            "name": "gsm"}
    tasks = load_tasks(spec, "domains.math.train", MathEnvironment)
    assert tasks.to_dict("records") == [
        {"id": "gsm-0", "question": "What is 2+2?", "answer": "4", "source": "gsm"},
        {"id": "gsm-1", "question": "What is 1,000+1?", "answer": "1001", "source": "gsm"},
    ]


def test_csv_with_template_fields_and_ids(tmp_path: Path):
    path = tmp_path / "svamp.csv"
    pd.DataFrame({"ID": ["a", "b"], "Body": ["Tom has 3.", "Ann has 5."], "Question": ["How many?", "Ten more?"],
                  "Answer": ["3", "15.0"]}).to_csv(path, index=False)
    spec = {"kind": "file", "path": str(path), "fields": {"id": "ID", "question": "{Body} {Question}",
                                                            "answer": "Answer"}}
    tasks = load_tasks(spec, "domains.math.testsets.svamp")
    assert tasks["id"].tolist() == ["a", "b"]
    assert tasks["question"].tolist() == ["Tom has 3. How many?", "Ann has 5. Ten more?"]


def test_parquet_and_limit(tmp_path: Path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"question": [f"q{i}" for i in range(10)], "answer": ["9 (apples)"] * 10}).to_parquet(path)
    tasks = load_tasks({"kind": "file", "path": str(path), "answer_format": "number", "limit": 3}, "k")
    assert len(tasks) == 3 and tasks["answer"].tolist() == ["9"] * 3


def test_presets_fill_in_and_can_be_overridden():
    spec = with_preset({"preset": "gsm8k", "split": "train", "fields": {"answer": "solution"}})
    assert spec["id"] == "openai/gsm8k" and spec["split"] == "train"
    assert spec["fields"] == {"question": "question", "answer": "solution"}


@pytest.mark.parametrize(
    ("rows", "fields", "message"),
    [
        ([{"question": "q", "answer": "1"}], {"question": "problem", "answer": "answer"},
         r"k\.fields\.question: .* has no column\(s\) \['problem'\]"),
        ([{"question": "", "answer": "1"}], {"question": "question", "answer": "answer"}, "empty questions"),
        ([{"question": "q", "answer": "1", "i": "x"}, {"question": "r", "answer": "2", "i": "x"}],
         {"question": "question", "answer": "answer", "id": "i"}, "duplicate ids"),
        ([{"question": "q", "answer": "1"}, {"question": None, "answer": "2"}], {"question": "question", "answer": "answer"},
         r"k\.fields\.question: .* has missing values \(null\) at rows \[1\]"),
        ([{"question": ["a", "b"], "answer": "1"}], {"question": "question", "answer": "answer"},
         r"k\.fields\.question: .* must hold text or numbers; rows \[0\] hold \['list'\]"),
        ([{"question": "q", "answer": {"value": 1}}], {"question": "question", "answer": "answer"},
         r"k\.fields\.answer: .* rows \[0\] hold \['dict'\]"),
        ([{"question": "q", "answer": 1, "i": None}], {"question": "question", "answer": "answer", "id": "i"},
         r"k\.fields\.id: .* missing values"),
    ],
)
def test_malformed_files_name_key_and_field(tmp_path: Path, rows, fields, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(DataError, match=message):
        load_tasks({"kind": "file", "path": str(path), "fields": fields}, "k")


def test_missing_empty_and_undecodable_files(tmp_path: Path):
    with pytest.raises(DataError, match=r"k\.path: file not found: .*nope\.jsonl"):
        load_tasks({"kind": "file", "path": str(tmp_path / "nope.jsonl")}, "k")
    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    with pytest.raises(DataError, match="no rows"):
        load_tasks({"kind": "file", "path": str(empty)}, "k")
    binary = tmp_path / "bytes.jsonl"
    binary.write_bytes(b"\xff\xfe{not json")
    with pytest.raises(DataError, match=r"k\.path: cannot read"):
        load_tasks({"kind": "file", "path": str(binary)}, "k")


@pytest.mark.parametrize(
    ("preset", "row", "question", "answer"),
    [
        ("gsm8k", {"question": "Q?", "answer": "work\n#### 1,234"}, "Q?", "1234"),
        ("svamp", {"ID": "c-1", "Body": "Tom has 3.", "Question": "How many?", "Answer": 3.0},
         "Tom has 3. How many?", "3.0"),
        ("asdiv", {"body": "Ann has 9 pens.", "question": "How many?", "answer": "9 (pens)"},
         "Ann has 9 pens. How many?", "9"),
        ("gsm_hard", {"input": "Big?", "target": 123456.0}, "Big?", "123456.0"),
        ("math", {"problem": "Find x.", "answer": "\\frac{1}{2}", "unique_id": "test/algebra/1.json"},
         "Find x.", "\\frac{1}{2}"),
        ("proofwriter", {"id": "AttNoneg-D5-1", "theory": "Bob is big.", "question": "Bob is red.",
                         "answer": "Unknown", "QDep": 0}, "Bob is big.\nBob is red.", "Unknown"),
        ("ruletaker", {"context": "The cat is red.", "question": "The cat is blue.", "label": "False",
                       "config": "depth-1"}, "The cat is red.\nThe cat is blue.", "False"),
    ],
)
def test_hub_presets_map_the_public_columns(monkeypatch, preset, row, question, answer):
    import datasets

    requested = {}

    def fake_load_dataset(dataset_id, subset=None, split=None):
        requested.update(id=dataset_id, subset=subset, split=split)
        return datasets.Dataset.from_list([row])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    tasks = load_tasks({"preset": preset}, f"domains.math.testsets.{preset}")
    assert requested["id"] == with_preset({"preset": preset})["id"]
    assert (tasks["question"].item(), tasks["answer"].item()) == (question, answer)


def test_unreachable_hub_names_the_key(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"domains\.math\.testsets\.gsm8k\.id: cannot load 'openai/gsm8k'.*kind: file"):
        load_tasks({"preset": "gsm8k"}, "domains.math.testsets.gsm8k")


# ---- MiniWob++ episodes (web) ------------------------------------------------------------------------


def test_miniwob_seeds_are_reproducible_and_train_test_disjoint():
    from envisions_flow.datasets.miniwob import MINIWOB_TASKS, miniwob_episodes

    assert len(MINIWOB_TASKS) == len(set(MINIWOB_TASKS)) == 44
    spec = {"kind": "miniwob", "episodes": 300, "seed": 3}
    train = miniwob_episodes({**spec, "split": "train"}, "train")  # all 44 tasks by default
    test = miniwob_episodes({**spec, "split": "test"}, "test")
    assert train == miniwob_episodes({**spec, "split": "train"}, "train")
    assert len(train) == len(test) == 44 * 300 and len(set(train)) == len(train)
    assert not {seed for _, seed in train} & {seed for _, seed in test}
    assert max(seed for _, seed in train) < 2**30 <= min(seed for _, seed in test)
    other = miniwob_episodes({**spec, "seed": 4, "split": "train"}, "train")
    assert len(set(train) & set(other)) < len(train) // 100  # another seed draws other episodes


@pytest.mark.parametrize("spec, message", [
    ({"kind": "miniwob", "tasks": ["click-button", "no-such-task"], "episodes": 1}, "no-such-task"),
    ({"kind": "miniwob", "tasks": ["click-button"]}, "episodes"),
    ({"kind": "miniwob", "tasks": ["click-button"], "episodes": 1, "split": "dev"}, "split"),
])
def test_miniwob_specs_are_checked_before_the_browser(spec, message):
    from envisions_flow.datasets.loaders import check_source

    with pytest.raises(DataError, match=message):
        check_source(spec, "domains.web.train", WebEnvironment, "train")


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no /usr/bin/chromium (make setup installs it)")
def test_miniwob_rows_hold_the_observation():
    spec = {"preset": "miniwob", "tasks": ["click-button", "enter-text"], "episodes": 2, "seed": 0, "split": "test"}
    tasks = load_tasks(spec, "domains.web.testsets.miniwob", WebEnvironment)
    assert list(tasks.columns) == ["id", "question", "answer", "source"]
    assert tasks["answer"].tolist() == ["click-button", "click-button", "enter-text", "enter-text"]
    for row in tasks.itertuples():
        name, seed = row.id.split(":")
        assert name == row.answer and int(seed) >= 2**30
        assert row.question.startswith("Instruction: ") and '<div id="wrap" data-wob_ref="2">' in row.question
