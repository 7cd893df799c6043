"""Loaders normalise every source to (id, question, answer, source) and name what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from envisions_flow.datasets.loaders import DataError, load_tasks, with_preset
from envisions_flow.datasets.word_problems import generate_word_problems
from envisions_flow.environments.logic import LogicEnvironment
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
        ("svamp", {"ID": "c-2", "Body": "If there is a discount of 25 dollars on each pack", "Answer": 51.0,
                   "Question": "How much do you have to pay to buy each pack?"},
         "If there is a discount of 25 dollars on each pack. How much do you have to pay to buy each pack?", "51.0"),
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
    logic = with_preset({"preset": preset}).get("answer_format") == "label"
    domain, environment = ("logic", LogicEnvironment) if logic else ("math", MathEnvironment)
    tasks = load_tasks({"preset": preset}, f"domains.{domain}.testsets.{preset}", environment)
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


def test_a_data_set_made_of_parts_has_the_rows_of_each_named_after_its_part(tmp_path):
    """The paper's math train set is GSM8K + MATH: two local stand-ins of the hub's columns, as config/paper.yaml
    names them by preset; keys a base config leaves beside `parts` are dropped."""
    import json

    from envisions_flow.datasets.loaders import DataError, check_source, load_tasks, with_preset

    gsm8k, math = tmp_path / "gsm8k.jsonl", tmp_path / "math.jsonl"
    gsm8k.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"work\n#### {i}"}) for i in range(3)))
    math.write_text(json.dumps({"problem": "p", "solution": "so \\boxed{\\frac{1}{2}}"}))
    spec = {"kind": "generated", "n": 2000, "answer_type": "symbolic",
            "parts": [{"preset": "gsm8k", "split": "train", "kind": "file", "path": str(gsm8k)},
                      {"preset": "math_full", "split": "train", "kind": "file", "path": str(math)}]}
    assert with_preset(spec) == {"answer_type": "symbolic", "parts": spec["parts"]}
    check_source(spec, "domains.math.train")
    rows = load_tasks(spec, "domains.math.train")
    assert rows["id"].tolist() == ["gsm8k-0", "gsm8k-1", "gsm8k-2", "math_full-0"]
    assert rows["answer"].tolist() == ["0", "1", "2", "\\frac{1}{2}"] and set(rows["source"]) == {"gsm8k", "math_full"}
    twice = {"parts": [{"preset": "gsm8k", "kind": "file", "path": str(gsm8k)}] * 2}
    with pytest.raises(DataError, match=r"domains.math.train.parts: two parts share a name"):
        load_tasks(twice, "domains.math.train")
    with pytest.raises(DataError, match=r"domains.math.train.parts.1.path: file not found"):
        check_source({"parts": [spec["parts"][0], {"preset": "math_full", "kind": "file", "path": "missing.jsonl"}]},
                     "domains.math.train")


# ---- data sets in their published forms: answers the judge cannot hold ------------------------------------

# ASDiv's answers as its authors published them (ASDiv.xml, and the hub copy EleutherAI/asdiv)
ASDIV_ANSWERS = {
    "nluds-0001": ("9 (apples)", "9"),
    "nluds-0002": ("5 (years old); 15 (years old)", None),  # two answers
    "nluds-0003": ("3:30 p.m.", None),  # a clock time
    "nluds-0004": ("5:6", None),  # a ratio
    "nluds-0005": ("-(1/3)", "-1/3"),
    "nluds-0006": ("Yes", None),
    "nluds-0007": ("Tom", None),
    "nluds-0008": ("−3 (degrees)", "-3"),  # a Unicode minus
    "nluds-0009": ("1,250 (dollars)", "1250"),
}


def _asdiv_xml(path: Path) -> None:
    problems = "".join(
        f'<Problem ID="{problem_id}" Grade="2" Source="http://example.org/{problem_id}">'
        f"<Body>Seven red apples and two green apples are in the basket.</Body>"
        f"<Question>How many apples are in the basket?</Question><Solution-Type>Addition</Solution-Type>"
        f"<Answer>{answer}</Answer><Formula>7+2=9</Formula></Problem>"
        for problem_id, (answer, _) in ASDIV_ANSWERS.items())
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<Machine-Reading-Corpus-File><ProblemSet>{problems}'
                    "</ProblemSet></Machine-Reading-Corpus-File>", encoding="utf-8")


def test_asdiv_original_keeps_one_number_answers_and_counts_the_rest(tmp_path: Path, caplog):
    path = tmp_path / "ASDiv.xml"
    _asdiv_xml(path)
    with caplog.at_level("WARNING"):
        tasks = load_tasks({"preset": "asdiv_xml", "path": str(path)}, "domains.math.testsets.asdiv", MathEnvironment)
    kept = {problem_id: gold for problem_id, (_, gold) in ASDIV_ANSWERS.items() if gold is not None}
    assert dict(zip(tasks["id"], tasks["answer"])) == kept
    assert tasks["question"].iloc[0] == ("Seven red apples and two green apples are in the basket. "
                                         "How many apples are in the basket?")
    assert "domains.math.testsets.asdiv: skipped 5 of 9 rows" in caplog.text and "'3:30 p.m.'" in caplog.text


def test_asdiv_hub_columns_load_the_same(monkeypatch):
    import datasets

    rows = [{"body": "Ann has pens.", "question": "How many?", "solution_type": "Addition", "answer": answer,
             "formula": "7+2=9"} for answer, _ in ASDIV_ANSWERS.values()]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.Dataset.from_list(rows))
    tasks = load_tasks({"preset": "asdiv"}, "domains.math.testsets.asdiv", MathEnvironment)
    assert tasks["answer"].tolist() == [gold for _, gold in ASDIV_ANSWERS.values() if gold is not None]
    assert tasks["id"].tolist() == ["asdiv-0", "asdiv-4", "asdiv-7", "asdiv-8"]  # ids keep the published row


def test_limit_counts_the_rows_kept(tmp_path: Path):
    path = tmp_path / "ASDiv.xml"
    _asdiv_xml(path)
    tasks = load_tasks({"preset": "asdiv_xml", "path": str(path), "limit": 2}, "k", MathEnvironment)
    assert tasks["answer"].tolist() == ["9", "-1/3"]


def test_no_answer_the_judge_can_hold_stops_the_run_at_start_up(tmp_path: Path):
    from envisions_flow.datasets.loaders import check_source

    path = tmp_path / "names.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"Who is {i}?", "answer": name})
                              for i, name in enumerate(["Tom", "Yes", "3:30 p.m."])))
    with pytest.raises(DataError, match=r"domains\.math\.train\.fields\.answer: no row of .* has one number"):
        check_source({"kind": "file", "path": str(path)}, "domains.math.train", MathEnvironment, "train")
    check_source({"kind": "file", "path": str(path), "answer_type": "symbolic"}, "domains.math.train", MathEnvironment,
                 "train")


def test_start_up_check_reads_every_row(tmp_path: Path):
    """A bad row far into a file stops the run before any job, not 20 s into one."""
    from envisions_flow.datasets.loaders import check_source

    rows = [{"question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(3000)]
    rows[2500]["question"] = None
    path = tmp_path / "gsm.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(DataError, match=r"domains\.math\.train\.fields\.question: .* missing values .* \[2500\]"):
        check_source({"kind": "file", "path": str(path)}, "domains.math.train", MathEnvironment, "train")


def test_published_numeric_golds(tmp_path: Path):
    """GSM8K's '#### 1,000', GSM-Hard's float targets, SVAMP's float answers, a Unicode minus."""
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in [
        ("Q1", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,000"), ("Q2", "#### −3")]))
    gsm8k = load_tasks({"preset": "gsm8k", "kind": "file", "path": str(path)}, "k", MathEnvironment)
    assert gsm8k["answer"].tolist() == ["1000", "−3"]
    path = tmp_path / "gsmhard.jsonl"
    path.write_text("\n".join(json.dumps({"input": f"Q{i}", "code": "def solution(): ...", "target": target})
                              for i, target in enumerate([7425800.0, 2.3333333333333335, -18.5])))
    tasks = load_tasks({"preset": "gsm_hard", "kind": "file", "path": str(path)}, "k", MathEnvironment)
    assert tasks["answer"].tolist() == ["7425800.0", "2.3333333333333335", "-18.5"]


@pytest.mark.parametrize(("closed_world", "kept"), [(False, ["True", "Unknown"]), (True, ["True"])])
def test_logic_labels_the_world_cannot_give_are_skipped(tmp_path: Path, closed_world, kept):
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "context": "Bob is big.", "question": "Bob is big?",
                                          "answer": label}) for i, label in enumerate(["A", "C", "maybe"])))
    spec = {"preset": "proofwriter_logiclm", "path": str(path), "closed_world": closed_world}
    assert load_tasks(spec, "domains.logic.testsets.pw", LogicEnvironment)["answer"].tolist() == kept
