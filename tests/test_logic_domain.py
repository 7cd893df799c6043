"""The logic domain: generated theories, their loaders, and the environment around the clingo executor."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from envisions_flow.datasets.loaders import load_tasks
from envisions_flow.datasets.theories import (
    ATTRIBUTES,
    _theory,
    forward_chain,
    generate_theories,
    label,
    theory_program,
)
from envisions_flow.environments.base import Task
from envisions_flow.environments.logic import ONE_SHOT, LogicEnvironment
from envisions_flow.environments.logic_programs import answer
from envisions_flow.environments.sandbox import Limits


@pytest.mark.parametrize("closed_world", [False, True])
def test_clingo_agrees_with_the_generators_own_reasoning(closed_world):
    r = random.Random(7)
    checked = 0
    for _ in range(60):
        entities, facts, rules = _theory(r, max_depth=5, closed_world=closed_world)
        known = forward_chain(facts, rules, entities)
        if any((p, a, not v) in known for p, a, v in known):
            continue
        for _ in range(5):
            statement = (r.choice(ATTRIBUTES), (r.choice(entities),), r.random() < 0.5)
            expected = label(statement, known, closed_world)
            assert answer(theory_program(facts, rules, statement), closed_world) == expected
            checked += 1
    assert checked > 100


def test_generated_questions_are_seeded_balanced_and_split():
    train = generate_theories({"n": 90, "seed": 1, "split": "train"}, "k")
    again = generate_theories({"n": 90, "seed": 1, "split": "train"}, "k")
    test = generate_theories({"n": 30, "seed": 1, "split": "test"}, "k")
    assert train.equals(again)
    assert train["answer"].value_counts().to_dict() == {"True": 30, "False": 30, "Unknown": 30}
    assert not set(train["question"]) & set(test["question"])
    closed = generate_theories({"n": 10, "seed": 1, "closed_world": True}, "k")
    assert set(closed["answer"]) == {"True", "False"}


def test_logic_lm_processed_form(tmp_path: Path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([
        {"id": "ProofWriter_1", "context": "Anne is big.", "question": "Based on the above information, is the "
         "following statement true, false, or unknown? Anne is big.", "options": ["A) True", "B) False",
                                                                                  "C) Unknown"], "answer": "A"},
        {"id": "ProofWriter_2", "context": "Anne is big.", "question": "... Bob is big.",
         "options": ["A) True", "B) False", "C) Unknown"], "answer": "C"},
    ]))
    tasks = load_tasks({"preset": "proofwriter_logiclm", "path": str(path)}, "domains.logic.testsets.pw", LogicEnvironment)
    assert tasks["id"].tolist() == ["ProofWriter_1", "ProofWriter_2"]
    assert tasks["answer"].tolist() == ["True", "Unknown"]
    assert tasks["question"].iloc[0].startswith("Anne is big.\nBased on")


def test_ruletaker_jsonl_nests_questions(tmp_path: Path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"id": "T1", "context": "The cat is red.", "questions": [
        {"id": "T1-1", "text": "The cat is red.", "label": True},
        {"id": "T1-2", "text": "The cat is blue.", "label": False}]}) + "\n")
    tasks = load_tasks({"preset": "ruletaker_jsonl", "path": str(path)}, "domains.logic.testsets.rt", LogicEnvironment)
    assert tasks[["id", "answer"]].values.tolist() == [["T1-1", "True"], ["T1-2", "False"]]
    assert tasks["question"].iloc[1] == "The cat is red.\nThe cat is blue."


def test_original_proofwriter_questions_as_a_dict(tmp_path: Path):
    path = tmp_path / "meta-test.jsonl"
    path.write_text(json.dumps({"id": "RelNoneg-1", "theory": "Bob is big.", "questions": {
        "Q1": {"question": "Bob is big.", "answer": True, "QDep": 0},
        "Q2": {"question": "Bob is red.", "answer": "Unknown", "QDep": 0}}}) + "\n")
    spec = {"kind": "file", "path": str(path), "explode": "questions", "answer_format": "label",
            "fields": {"question": "{theory}\n{questions.question}", "answer": "questions.answer"}}
    tasks = load_tasks(spec, "k", LogicEnvironment)
    assert tasks["answer"].tolist() == ["True", "Unknown"]


def test_environment_executes_and_classifies():
    env = LogicEnvironment()
    task = Task("a", ONE_SHOT[0], "True")
    programs = [ONE_SHOT[1], ONE_SHOT[1].replace("Query:\nKind(Anne, True)", "Query:\nKind(Bob, True)"),
                "Predicates:\nFacts:\nA(B, True\nRules:\nQuery:\nA(B, True)", "", "no program here"]
    results = env.execute([task] * len(programs), programs)
    assert [(r.b, r.value, r.error_class) for r in results] == [
        (1, "True", ""), (0, "Unknown", "wrong_answer"), (0, None, "unbalanced_parentheses"),
        (0, None, "no_program"), (0, None, "missing_section")]


def test_environment_prompts_and_round_trip():
    env = LogicEnvironment()
    task = Task("a", "Theory: X.\nStatement: Y.", "True")
    assert len(env.explore_prompt(task, few_shot=True)) == 3
    assert env.extract_program(env.render_solution(ONE_SHOT[1])) == ONE_SHOT[1]
    assert env.program_key("A(B, True) ::: x\n\n  C(D,   True)") == env.program_key("A(B, True)\nC(D, True)")


def test_a_grounding_bomb_is_isolated_and_its_neighbours_answered():
    """A program whose grounding explodes times out alone; the rest of its chunk is still answered."""
    constants = "\n".join(f"A(C{i}, True)" for i in range(40))
    variables = ["$a", "$b", "$c", "$d", "$e", "$f"]
    rule = " && ".join(f"A({v}, True)" for v in variables) + f" >>> B({', '.join(variables)}, True)"
    bomb = f"Predicates:\nFacts:\n{constants}\nRules:\n{rule}\nQuery:\nB(C1, C2, C3, C4, C5, C6, True)"
    env = LogicEnvironment(limits=Limits(timeout_s=1.0, memory_mb=1024), chunk_size=4)
    programs = [ONE_SHOT[1], bomb, ONE_SHOT[1], ONE_SHOT[1], ONE_SHOT[1]]
    results = env.execute([Task(str(i), "", "True") for i in range(5)], programs)
    assert [r.b for r in results] == [1, 0, 1, 1, 1]
    assert results[1].error_class in {"timeout", "memory"}
