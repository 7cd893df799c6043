"""The math judge: one number against a numeric gold, under the configured match rule; math-verify for LaTeX."""

import pytest

from envisions_flow.environments import math_answers as answers
from envisions_flow.environments.values import BOOL, COMPLEX, CONTAINER, EXPRESSION, MAPPING, NUMBER, OTHER, STRING
from envisions_flow.environments.math_answers import (ABSOLUTE, JUDGE_TIMEOUT, math_verify_verdicts, numbers_match,
                                                      numeric_verdict, parse_number, symbolic_verdict, unbox,
                                                      verify_latex)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42), ("42.0", 42), ("1,000", 1000), ("1,234,567.5", 1234567.5), ("$12.50", 12.5), ("-$12.50", -12.5),
        ("\\$12.50", 12.5), ("50%", 50), ("10\\%", 10), ("42 apples", 42), ("9 (apples)", 9), ("18 km/h", 18),
        ("The answer is 18.", 18), ("x = 18", 18), ("3/4", 0.75), ("\\frac{3}{4}", 0.75), ("\\boxed{\\frac{1}{2}}", 0.5),
        ("-(1/3)", -1 / 3), ("−3", -3), ("1e6", 1e6), ("1E+2", 100), (".5", 0.5), ("18 years-old", 18),
        ("18\\text{ apples}", 18),
        # not one number: none, several, a hedge or bound, a container, an operator, a LaTeX expression
        ("Yes", None), ("Tom", None), ("inf", None), ("nan", None), ("True", None),
        ("5 (years old); 15 (years old)", None), ("3:30 p.m.", None), ("5:6", None), ("1,00", None), ("12/25/2020", None),
        ("18 or 36", None), ("not 18 but 20", None), ("not 18", None), ("either 18", None), ("at least 18", None),
        ("more than 18", None), ("18 isn't it", None), ("18?", None), ("[18]", None), ("(18, 5)", None),
        ("{'answer': 18}", None), ("range(18, 30)", None), ("18+5j", None), (" - 18", None), ("x/2", None),
        ("\\frac{x}{2}", None), ("\\sqrt{2}", None), ("2^{10}", None), ("3rd", None),
    ],
)
def test_one_number_or_none(text, number):
    assert parse_number(text) == (None if number is None else pytest.approx(number, rel=1e-12))


def test_the_rule_is_absolute_and_relative_to_the_gold():
    assert numbers_match(18.00001, 18) and numbers_match(0.3333, 1 / 3) and not numbers_match(0.33, 1 / 3)
    # GSM-Hard golds reach millions: off by 900 is wrong, though within 1e-4 of the gold's size
    assert not numbers_match(12_346_500, 12_345_600) and not numbers_match(12_345_600.5, 12_345_600)
    assert numbers_match(12_345_600.00005, 12_345_600)
    # 0 is not an answer to a gold below 1e-4; a float's rounding still answers a gold of 0
    assert not numbers_match(0, 5e-5) and numbers_match(5e-5, 5e-5) and numbers_match(0.1 * 3 - 0.3, 0)
    # the authors' absolute rule alone, as a config choice
    assert numbers_match(0, 5e-5, ABSOLUTE) and not numbers_match(12_346_500, 12_345_600, ABSOLUTE)
    assert not numbers_match(float("nan"), 1) and not numbers_match(float("inf"), float("inf"))
    with pytest.raises(ValueError, match="execution.numeric_match"):
        numbers_match(1, 1, "relative")


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("18", NUMBER, True), ("18.0", NUMBER, True), ("1.8E+1", NUMBER, True), ("36/2", NUMBER, True),
        ("$18.00", STRING, True), ("18 apples", STRING, True), ("18 or 36", STRING, False),
        ("18", CONTAINER, False),  # [18]: rendered as the solution set "18", still a list
        ("(18)", CONTAINER, False), ("{answer: 18}", MAPPING, False), ("18 + 0i", COMPLEX, False),
        ("18", EXPRESSION, False), ("True", BOOL, False), ("18", OTHER, False), ("18", "", False),
    ],
)
def test_a_numeric_gold_takes_a_number_or_a_string_holding_one(value, kind, expected):
    assert numeric_verdict(value, kind, "18") is expected
    assert numeric_verdict(value, kind, "18", ABSOLUTE) is expected


@pytest.mark.parametrize(
    ("value", "gold", "expected"),
    [
        ("0.5", "\\frac{1}{2}", True), ("1/2", "\\frac{1}{2}", True), ("2 \\sqrt{2}", "2\\sqrt{2}", True),
        ("3", "\\frac{1}{2}", False), ("6 - 5i", "6 - 5i", True), ("\\pi", "\\pi", True), ("(1, 2)", "(1, 2)", True),
        ("-2, 1", "1, -2", True), ("\\left[2, 5\\right)", "[2, 5)", True), ("x^{2} + 1", "x^2+1", True),
        ("18 or 36", "18", False), ("18 \\text{ or } 36", "36", False), ("\\boxed{18} or \\boxed{36}", "18", False),
        ("not 18 but 20", "20", False), ("18, 36", "18", False),
    ],
)
def test_symbolic_equivalence_is_math_verify(value, gold, expected):
    assert verify_latex(value, gold) is expected


def test_symbolic_verdicts_run_in_the_sandbox_with_a_timeout(monkeypatch):
    monkeypatch.setattr(answers, "JUDGE_TIMEOUT_S", 3.0)
    pairs = [("2 \\sqrt{2}", "2\\sqrt{2}"), ("9^{9^{9}}", "18"), ("\\frac{1}{3}", "\\frac{1}{2}"), ("}{", "18")]
    assert math_verify_verdicts(pairs, memory_mb=1024, workers=2) == ["", JUDGE_TIMEOUT, "wrong_answer", "wrong_answer"]
    assert math_verify_verdicts([], memory_mb=1024, workers=2) == []


def test_symbolic_golds_compare_plain_numbers_without_math_verify():
    assert not answers.needs_math_verify("0.5", NUMBER, "\\frac{1}{2}") and symbolic_verdict("0.5", NUMBER, "\\frac{1}{2}")
    assert not answers.needs_math_verify("\\text{(C)}", STRING, "\\text{(C)}")  # equal text
    assert answers.needs_math_verify("1/2", NUMBER, "\\sqrt{2}") and answers.needs_math_verify("6 - 5i", COMPLEX, "6-5i")
    for kind in (BOOL, MAPPING, OTHER):  # never mathematics, whatever the text
        assert not answers.needs_math_verify("18", kind, "18") and not symbolic_verdict("18", kind, "18")


def test_unbox_takes_the_last_balanced_box():
    assert unbox("so \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert parse_number("\\boxed{\\frac{3}{4}}") == 0.75
