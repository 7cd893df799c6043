"""Fuzzing the two interpreters of model-written programs (hypothesis): whatever the text, the logic
compiler gives an answer or a classified error and the web interpreter a bounded list of actions or a
classified refusal; neither raises anything else or hangs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envisions_flow.environments import logic_programs, web_programs
from envisions_flow.environments.web_prompts import ONE_SHOT

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOGIC_PROGRAM = """Predicates:
Furry($x, bool) ::: Is x furry?
Chases($x, $y, bool)
Nice($x, bool)
Kind($x, bool)
Facts:
Furry(Anne, True) ::: Anne is furry.
Chases(Anne, Bob, True)
Rules:
Furry($x, True) && Chases($x, Bob, True) >>> Nice($x, True)
Nice($x, True) >>> Kind($x, True)
Query:
Kind(Anne, True)
"""

WEB_PROGRAM = ONE_SHOT[1] + """
for i in range(3):
    agent.press('arrowdown')
agent.type(str(7 * 6) + 'x' * 2)
agent.click_xpath("//*[@data-wob_ref='" + str(4) + "']")
x = -2
key = 'arrowleft' if x < 0 else 'arrowright'
for _ in range(abs(x)):
    if x < 0 and key:
        agent.press(key)
for w in ['a', 'b']:
    agent.type(f"{w}{x:02d}"[1:])
"""

LOGIC_CLASSES = {logic_programs.MISSING_SECTION, logic_programs.UNBALANCED, logic_programs.BAD_ATOM,
                 logic_programs.BAD_RULE, logic_programs.ARITY_CLASH, logic_programs.UNKNOWN_PREDICATE,
                 logic_programs.EMPTY_PROGRAM, logic_programs.UNRELATED_QUERY, logic_programs.INCONSISTENT,
                 logic_programs.SOLVER}
WEB_CLASSES = {web_programs.SYNTAX, web_programs.FORBIDDEN, web_programs.LIMIT, web_programs.RUNTIME,
               web_programs.BAD_KEY, web_programs.NO_PROGRAM, web_programs.TOO_LARGE, web_programs.TEXT_LIMIT,
               web_programs.CPU_LIMIT}


@st.composite
def mutated(draw, text: str, alphabet: st.SearchStrategy[str]) -> str:
    """`text` with a few characters or slices deleted, replaced, duplicated or inserted."""
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        edit = draw(st.sampled_from(["delete", "replace", "duplicate", "insert"]))
        if edit == "delete":
            text = text[:start] + text[end:]
        elif edit == "duplicate":
            text = text[:end] + text[start:end] * draw(st.integers(1, 50)) + text[end:]
        else:
            piece = draw(alphabet)
            text = text[:start] + piece + (text[end:] if edit == "replace" else text[start:])
    return text


LOGIC_PIECES = st.one_of(st.text(max_size=8), st.sampled_from(
    ["(", ")", "$x", "$y", ",", "&&", ">>>", ":::", "True", "False", "Query:", "Rules:", "\n", "Kind(", "not ",
     "Nice($x, True)", ":-", ".", "#const", "%", "!", "¬", "BIG(", "Facts:"]))
WEB_PIECES = st.one_of(st.text(max_size=8), st.sampled_from(
    ["agent.", "click_xpath(", "type(", "press(", "'", '"', "(", ")", "\n", "    ", "for _ in range(", "):", "while True:",
     "import os", "__import__", "**", "* 10**9", "9" * 30, "open(", "eval(", "lambda: 0", "[", "]", "{", "}", "\\",
     "if ", " else ", "elif x:", " and ", " or ", "not ", " < ", " == ", " in ", "abs(", "round(", "min(", "max(",
     "[1, 'a']", "[0]", "[1:-1]", "f'{x:>99}'", "f'{x!r}'", "for w in ['a', 'b']:", "* 1000", "x = x + x\n"]))


def _check_logic(text: str, closed_world: bool) -> None:
    result = logic_programs.answer_or_error(text, closed_world)
    if result.startswith("error:"):
        assert result.split(":")[1] in LOGIC_CLASSES, result
    else:
        assert result in {logic_programs.TRUE, logic_programs.FALSE, logic_programs.UNKNOWN}


def _check_web(text: str) -> None:
    try:
        actions = web_programs.parse_program(text, max_actions=50)
    except web_programs.ProgramError as error:
        assert error.error_class in WEB_CLASSES, error.error_class
    else:
        assert 1 <= len(actions) <= 50
        assert all(action.kind in web_programs.METHODS and len(action.arg) <= web_programs.MAX_TEXT
                   for action in actions)


def test_the_seed_programs_are_valid():
    assert logic_programs.answer(LOGIC_PROGRAM) == logic_programs.TRUE
    assert len(web_programs.parse_program(WEB_PROGRAM)) == 12


@pytest.mark.timeout(300)
@FUZZ
@given(text=st.text(max_size=400), closed_world=st.booleans())
def test_logic_random_text(text, closed_world):
    _check_logic(text, closed_world)


@pytest.mark.timeout(300)
@FUZZ
@given(text=mutated(LOGIC_PROGRAM, LOGIC_PIECES), closed_world=st.booleans())
def test_logic_mutated_programs(text, closed_world):
    _check_logic(text, closed_world)


@pytest.mark.timeout(300)
@FUZZ
@given(text=st.text(max_size=400))
def test_web_random_text(text):
    _check_web(text)


@pytest.mark.timeout(300)
@FUZZ
@given(text=mutated(WEB_PROGRAM, WEB_PIECES))
def test_web_mutated_programs(text):
    _check_web(text)
