"""The logic judge credits exactly the right answers: programs that answer without translating the theory get
b = 0; correct Logic-LM programs, in the forms Logic-LM's own executor accepted, get b = 1.

Tasks come through the real loaders from files this test writes in the published shapes of Logic-LM's
processed ProofWriter (open world, options A/B/C) and RuleTaker's jsonl (closed world); programs are
answered by the real environment (clingo in worker processes).
"""

from __future__ import annotations

import json

import pytest

from envisions_flow.datasets.loaders import load_tasks
from envisions_flow.environments.base import Task
from envisions_flow.environments.logic import LogicEnvironment

THEORY = ("Anne is big. Anne is not red. Bob is kind. If someone is big and not red then they are furry. "
          "If someone is furry then they are nice. All kind people are young.")
STATEMENTS = {"ProofWriter_T1_Q1": ("Anne is nice.", "A"), "ProofWriter_T1_Q2": ("Anne is not furry.", "B"),
              "ProofWriter_T1_Q3": ("Bob is nice.", "C"), "ProofWriter_T1_Q4": ("Bob is young.", "A")}
QUESTION = "Based on the above information, is the following statement true, false, or unknown? "

PREDICATES = ("Predicates:\nBig($x, bool) ::: Is x big?\nRed($x, bool) ::: Is x red?\nKind($x, bool) ::: Is x kind?\n"
              "Furry($x, bool) ::: Is x furry?\nNice($x, bool) ::: Is x nice?\nYoung($x, bool) ::: Is x young?")
FACTS = "Facts:\nBig(Anne, True) ::: Anne is big.\nRed(Anne, False) ::: Anne is not red.\nKind(Bob, True) ::: Bob is kind."
RULES = ("Rules:\nBig($x, True) && Red($x, False) >>> Furry($x, True) ::: If someone is big and not red then they "
         "are furry.\nFurry($x, True) >>> Nice($x, True) ::: If someone is furry then they are nice.\n"
         "Kind($x, True) >>> Young($x, True) ::: All kind people are young.")


def translation(query: str, facts: str = FACTS, rules: str = RULES, predicates: str = PREDICATES) -> str:
    return "\n".join(part for part in (predicates, facts, rules, f"Query:\n{query}") if part)


NEGATED = (FACTS.replace("Red(Anne, False)", "!Red(Anne, True)"),
           RULES.replace("Red($x, False)", "¬Red($x, True)"))
RULES_UNDER_FACTS = FACTS + "\n" + RULES.removeprefix("Rules:\n")

# (task id, program, b, error class)
OPEN_WORLD = {
    "true": ("ProofWriter_T1_Q1", translation("Nice(Anne, True) ::: Anne is nice."), 1, ""),
    "false": ("ProofWriter_T1_Q2", translation("Furry(Anne, False) ::: Anne is not furry."), 1, ""),
    "unknown": ("ProofWriter_T1_Q3", translation("Nice(Bob, True)"), 1, ""),
    "negation_marks": ("ProofWriter_T1_Q1", translation("Nice(Anne, True)", *NEGATED), 1, ""),
    "negated_query": ("ProofWriter_T1_Q2", translation("!Furry(Anne, True)"), 1, ""),
    "rules_under_facts": ("ProofWriter_T1_Q4", translation("Young(Bob, True)", RULES_UNDER_FACTS, ""), 1, ""),
    "no_predicates_section": ("ProofWriter_T1_Q4", translation("Young(Bob, True)", predicates=""), 1, ""),
    # answering without translating
    "empty_program": ("ProofWriter_T1_Q3", translation("Nice(Bob, True)", "Facts:", "Rules:"), 0, "empty_program"),
    "only_declarations": ("ProofWriter_T1_Q3", "Predicates:\nNice($x, bool)\nFacts:\nQuery:\nNice(Bob, True)", 0,
                          "empty_program"),
    "unrelated_query": ("ProofWriter_T1_Q3", translation("Nice(Carol, True)", "Facts:\nBig(Anne, True)"), 0,
                        "unrelated_query"),
    "both_values": ("ProofWriter_T1_Q1", translation("Nice(Anne, True)", "Facts:\nNice(Anne, True)\nNice(Anne, False)"
                                                                         "\nBig(Anne, True)"), 0,
                    "inconsistent_program"),
    "query_alone": ("ProofWriter_T1_Q3", "Query:\nNice(Bob, True)", 0, "missing_section"),
    "case_folded": ("ProofWriter_T1_Q1", translation("NICE(Anne, True)"), 0, "unknown_predicate"),
    "mistranslated": ("ProofWriter_T1_Q1", translation("Nice(Anne, True)", FACTS.replace("Red(Anne, False)",
                                                                                         "Red(Anne, True)")), 0,
                      "wrong_answer"),
    "no_program": ("ProofWriter_T1_Q3", "", 0, "no_program"),
}

RULETAKER_THEORY = "The cat is big. The cat is kind. If something is big then it is rough."
RULETAKER_PROGRAM = ("Predicates:\nBig($x, bool)\nKind($x, bool)\nRough($x, bool)\nRed($x, bool)\n"
                     "Facts:\nBig(Cat, True)\nKind(Cat, True)\nRules:\nBig($x, True) >>> Rough($x, True)\nQuery:\n")
CLOSED_WORLD = {
    "true": ("RT-1-1", RULETAKER_PROGRAM + "Rough(Cat, True)", 1, ""),
    "false_by_default": ("RT-1-2", RULETAKER_PROGRAM + "Red(Cat, True)", 1, ""),
    "negated": ("RT-1-3", RULETAKER_PROGRAM + "Rough(Cat, False)", 1, ""),
    "empty_program": ("RT-1-2", "Predicates:\nRed($x, bool)\nFacts:\nRules:\nQuery:\nRed(Cat, True)", 0,
                      "empty_program"),
    "unrelated_query": ("RT-1-1", "Facts:\nBig(Dog, True)\nQuery:\nBig(Cat, False)", 0, "unrelated_query"),
}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict[str, Task]:
    directory = tmp_path_factory.mktemp("published")
    processed = directory / "ProofWriter_dev.json"
    processed.write_text(json.dumps([
        {"id": task_id, "context": THEORY, "question": QUESTION + statement,
         "options": ["A) True", "B) False", "C) Unknown"], "answer": label}
        for task_id, (statement, label) in STATEMENTS.items()]))
    ruletaker = directory / "ruletaker_test.jsonl"
    ruletaker.write_text(json.dumps({"id": "RT-1", "context": RULETAKER_THEORY, "questions": [
        {"id": "RT-1-1", "text": "The cat is rough.", "label": True},
        {"id": "RT-1-2", "text": "The cat is red.", "label": False},
        {"id": "RT-1-3", "text": "The cat is not rough.", "label": False}]}) + "\n")
    frames = [load_tasks({"preset": "proofwriter_logiclm", "path": str(processed)}, "domains.logic.testsets.pw",
                         LogicEnvironment),
              load_tasks({"preset": "ruletaker_jsonl", "path": str(ruletaker)}, "domains.logic.testsets.rt",
                         LogicEnvironment)]
    return {row.id: Task(row.id, row.question, row.answer) for frame in frames for row in frame.itertuples()}


def _verdicts(tasks: dict[str, Task], cases: dict, closed_world: bool) -> dict:
    results = LogicEnvironment(closed_world=closed_world).execute([tasks[task_id] for task_id, *_ in cases.values()],
                                                                  [program for _, program, *_ in cases.values()])
    return dict(zip(cases, results))


@pytest.fixture(scope="module")
def open_world(tasks):
    return _verdicts(tasks, OPEN_WORLD, closed_world=False)


@pytest.fixture(scope="module")
def closed_world(tasks):
    return _verdicts(tasks, CLOSED_WORLD, closed_world=True)


def test_the_published_shapes_load(tasks):
    assert [tasks[task_id].answer for task_id in STATEMENTS] == ["True", "False", "Unknown", "True"]
    assert [tasks[f"RT-1-{i}"].answer for i in (1, 2, 3)] == ["True", "False", "False"]


@pytest.mark.parametrize("case", sorted(OPEN_WORLD))
def test_open_world_verdicts(open_world, case):
    *_, b, error_class = OPEN_WORLD[case]
    assert (open_world[case].b, open_world[case].error_class) == (b, error_class), open_world[case]


@pytest.mark.parametrize("case", sorted(CLOSED_WORLD))
def test_closed_world_verdicts(closed_world, case):
    *_, b, error_class = CLOSED_WORLD[case]
    assert (closed_world[case].b, closed_world[case].error_class) == (b, error_class), closed_world[case]


def test_no_constant_answer_is_credited_by_a_program_that_states_nothing(tasks):
    """The cheapest program with each answer: none is credited on any item, whatever its label."""
    ids = list(STATEMENTS)
    for query in ("Nice(Bob, True)", "Young(Bob, False)"):
        empty = f"Predicates:\nNice($x, bool)\nYoung($x, bool)\nFacts:\nRules:\nQuery:\n{query}"
        results = LogicEnvironment().execute([tasks[i] for i in ids], [empty] * len(ids))
        assert [result.b for result in results] == [0] * len(ids)
