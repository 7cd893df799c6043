"""Conformance of the Logic-LM → clingo compilation: every construct, both worlds, every malformed case."""

from __future__ import annotations

import pytest

from envisions_flow.environments.logic_programs import (
    ARITY_CLASH,
    BAD_ATOM,
    BAD_RULE,
    FALSE,
    MISSING_SECTION,
    TRUE,
    UNBALANCED,
    UNKNOWN,
    UNKNOWN_PREDICATE,
    ProgramError,
    answer,
)


def program(facts: str, rules: str, query: str, predicates: str = "") -> str:
    return f"Predicates:\n{predicates}\nFacts:\n{facts}\nRules:\n{rules}\nQuery:\n{query}\n"


ANNE = program(
    "Furry(Anne, True) ::: Anne is furry.\nChases(Anne, Bob, True)\nBig(Bob, False) ::: Bob is not big.",
    "Furry($x, True) && Chases($x, Bob, True) >>> Nice($x, True) ::: furry chasers of Bob are nice\n"
    "Nice($x, True) >>> Kind($x, True) && Calm($x, True)",
    "Kind(Anne, True)",
    "Furry($x, bool) ::: Is x furry?\nChases($x, $y, bool)\nNice($x, bool)\nKind($x, bool)\nCalm($x, bool)\n"
    "Big($x, bool)",
)


@pytest.mark.parametrize(
    ("query", "open_world", "closed_world"),
    [
        ("Kind(Anne, True)", TRUE, TRUE),  # two rules, a constant in a rule, n-ary relation, two conclusions
        ("Calm(Anne, False)", FALSE, FALSE),  # the opposite value is derivable
        ("Kind(Bob, True)", UNKNOWN, FALSE),  # nothing known: open world says Unknown, closed world False
        ("Kind(Bob, False)", UNKNOWN, TRUE),
        ("Big(Bob, False)", TRUE, TRUE),  # a False fact
        ("Big(Bob, True)", FALSE, FALSE),
        ("Chases(Anne, Bob, True)", TRUE, TRUE),
    ],
)
def test_answers_in_both_worlds(query, open_world, closed_world):
    text = ANNE.replace("Query:\nKind(Anne, True)", f"Query:\n{query}")
    assert answer(text, closed_world=False) == open_world
    assert answer(text, closed_world=True) == closed_world


def test_cycles_terminate():
    text = program("Red(A, True)", "Red($x, True) >>> Blue($x, True)\nBlue($x, True) >>> Red($x, True)\n"
                   "Blue($x, True) >>> Green($x, True)", "Green(A, True)")
    assert answer(text) == TRUE


def test_depth_five_chain():
    rules = "\n".join(f"P{i}($x, True) >>> P{i + 1}($x, True)" for i in range(5))
    text = program("P0(Cat, True)", rules, "P5(Cat, True)")
    assert answer(text) == TRUE
    assert answer(text.replace("P5(Cat, True)", "P5(Dog, True)")) == UNKNOWN


def test_false_premises_and_negation_as_failure():
    text = program("Young(Bob, True)\nRough(Bob, False)",
                   "Young($x, True) && Rough($x, False) >>> Smooth($x, True)", "Smooth(Bob, True)")
    assert answer(text) == TRUE  # open world: the False fact is stated
    without_fact = text.replace("Rough(Bob, False)\n", "")
    assert answer(without_fact) == UNKNOWN  # open world: Rough(Bob) is unknown, the rule does not fire
    assert answer(without_fact, closed_world=True) == TRUE  # closed world: not derivable means false


def test_comments_and_undeclared_predicates_are_accepted():
    text = "Predicates:\nFacts:\nCold(Ice, True) ::: ice is cold\nRules:\nQuery:\nCold(Ice, True) ::: is it?"
    assert answer(text) == TRUE


@pytest.mark.parametrize(
    ("text", "error_class"),
    [
        ("Facts:\nA(B, True)\nRules:\nQuery:\nA(B, True)", MISSING_SECTION),
        (program("A(B, True)", "", ""), MISSING_SECTION),
        (program("A(B, True", "", "A(B, True)"), UNBALANCED),
        (program("A(B, True))", "", "A(B, True)"), UNBALANCED),
        (program("A(B, Maybe)", "", "A(B, True)"), BAD_ATOM),
        (program("A B True", "", "A(B, True)"), BAD_ATOM),
        (program("A($x, True)", "", "A(B, True)"), BAD_ATOM),
        (program("A(B, True)\nA(B, C, True)", "", "A(B, True)"), ARITY_CLASH),
        (program("A(B, True)", "", "A(B, C, True)"), ARITY_CLASH),
        (program("A(B, True)", "", "Z(B, True)"), UNKNOWN_PREDICATE),
        (program("A(B, True)", "A($x, True) > C($x, True)", "A(B, True)"), BAD_RULE),
        (program("A(B, True)", "A($x, True) >>> C($y, True)", "A(B, True)"), BAD_RULE),
        (program("A(B, True)", "A($x, True) && >>> C($x, True)", "A(B, True)"), BAD_RULE),
    ],
)
def test_malformed_programs_are_classified(text, error_class):
    with pytest.raises(ProgramError) as raised:
        answer(text)
    assert raised.value.error_class == error_class


def test_constants_with_quotes_cannot_inject_asp():
    text = program('Likes(Bob, True)', '', 'Likes(Bob, True)')
    assert answer(text) == TRUE
    with pytest.raises(ProgramError) as raised:
        answer(program('Likes(Bob"). evil(x, True)', '', 'Likes(Bob, True)'))
    assert raised.value.error_class in {BAD_ATOM, UNBALANCED}
