"""Judging a produced value against a gold answer.

A numeric gold is answered by exactly one number: a number the program returned, or a
string holding one number (thousands separators, a currency sign, a unit word or a percent
sign allowed: "1,000", "$12.50", "42 apples", "50%"). Containers, complex numbers, booleans
and hedges ("18 or 36", "not 18 but 20", "at least 18") answer nothing. Symbolic golds (MATH)
go to math-verify, which knows LaTeX equivalence far better than regexes of ours would; it runs
in the sandbox, so that an answer such as 9^{9^{9}} costs one judge timeout, not the job.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Sequence

from envisions_flow.environments.base import CORRECT, WRONG_ANSWER
from envisions_flow.environments.values import COMPLEX, CONTAINER, EXPRESSION, NUMBER, STRING

if TYPE_CHECKING:
    from envisions_flow.environments.sandbox import Confinement

NUMERIC = "numeric"
SYMBOLIC = "symbolic"

# How a number is matched to a numeric gold (config key execution.numeric_match).
ABSOLUTE_AND_RELATIVE = "absolute_and_relative"  # |a - y| <= 1e-4 and |a - y| <= 1e-4 |y|
ABSOLUTE = "absolute"  # the authors' checker: |a - y| <= 1e-4
MATCH_RULES = (ABSOLUTE_AND_RELATIVE, ABSOLUTE)
TOLERANCE = 1e-4
# A gold of 0 has no relative scale: a float's rounding (0.1 * 3 - 0.3 = 5.6e-17) still matches it.
ZERO_SCALE = 1e-9

JUDGE_TIMEOUT = "judge_timeout"  # math-verify ran out of time or memory on a symbolic answer
JUDGE_TIMEOUT_S = 10.0  # per symbolic judgement: math-verify's own defaults are 5 s to parse and 5 s to verify

_BOXED = re.compile(r"\\boxed\s*\{")
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(rf"(?<![\w.])[-+]?(?:{_DIGITS})(?:[eE][-+]?\d+)?(?:\s*/\s*(?:{_DIGITS}))?(?![\w])")
_SIGNED_PARENTHESES = re.compile(rf"([-+])\s*\(\s*((?:{_DIGITS})(?:\s*/\s*(?:{_DIGITS}))?)\s*\)")
_FRACTION = re.compile(rf"\\[dt]?frac\s*\{{\s*(-?(?:{_DIGITS}))\s*\}}\s*\{{\s*({_DIGITS})\s*\}}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_LATEX_MARKS = {"\\$": "$", "\\%": "%", "\\,": "", "\\!": "", "\\ ": " ", "^\\circ": "°", "^{\\circ}": "°",
                "\\left": "", "\\right": "", "\u2212": "-"}
_CURRENCY = str.maketrans("", "", "$€£¥₹")
# What may surround the one number: words, spaces, stops and brackets of a unit ("9 (apples)")
_DECORATION = re.compile(r"[^\W\d]|[\s.,;:!()'\"=%°]")
_JOINED_WORDS = re.compile(r"(?<=[^\W\d])[-/](?=[^\W\d])")  # "years-old", "km/h"
_WORD = re.compile(r"[^\W\d]+(?:'[^\W\d]+)?")
# Words that make a number a hedge or a bound instead of an answer
_HEDGES = frozenset({"or", "nor", "not", "no", "none", "but", "except", "and", "never", "neither", "either", "maybe",
                     "perhaps", "possibly", "probably", "unless", "between", "than", "least", "most", "instead"})


def unbox(text: str) -> str:
    """Return the content of the last \\boxed{...} (balanced braces), or the text itself."""
    matches = list(_BOXED.finditer(text))
    if not matches:
        return text
    start = matches[-1].end()
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return text[start:]


def number_token(text: str | None) -> str | None:
    """The one number an answer string holds ("-(1/3)" -> "-1/3", "$1,000 dollars" -> "1000"); None otherwise.

    None when there is no number, more than one ("18 or 36", "3:30 p.m.", "5:6"), a hedge word
    ("not 18"), or anything but words, spaces, stops, brackets, a currency or percent sign around it
    (containers "[18]", operators "18+5", LaTeX commands "\\sqrt{2}").
    """
    if text is None:
        return None
    cleaned = unbox(str(text))
    for mark, replacement in _LATEX_MARKS.items():
        cleaned = cleaned.replace(mark, replacement)
    cleaned = _TEXT.sub(r" \1 ", _FRACTION.sub(r"\1/\2", cleaned)).translate(_CURRENCY)
    cleaned = _SIGNED_PARENTHESES.sub(r"\1\2", cleaned)
    matches = list(_NUMBER.finditer(cleaned))
    if len(matches) != 1:
        return None
    rest = cleaned[: matches[0].start()] + " " + cleaned[matches[0].end():]
    rest = _JOINED_WORDS.sub("", rest)
    if len(_DECORATION.findall(rest)) != len(rest):
        return None
    if any(word.lower() in _HEDGES or word.lower().endswith("n't") for word in _WORD.findall(rest)):
        return None
    return re.sub(r"[\s,]", "", matches[0].group(0))


def parse_number(text: str | None) -> float | None:
    """The value of the one number an answer string holds (see `number_token`); None otherwise."""
    token = number_token(text)
    if token is None:
        return None
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            return float(numerator) / float(denominator)
        return float(token)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def numbers_match(value: float, gold: float, rule: str = ABSOLUTE_AND_RELATIVE) -> bool:
    """Within the authors' absolute 1e-4 and, under the default rule, within 1e-4 relative to the gold."""
    if not (math.isfinite(value) and math.isfinite(gold)):
        return False
    error = abs(value - gold)
    if rule == ABSOLUTE:
        return error <= TOLERANCE
    if rule != ABSOLUTE_AND_RELATIVE:
        raise ValueError(f"execution.numeric_match: unknown rule {rule!r} (known: {', '.join(MATCH_RULES)})")
    return error <= TOLERANCE and error <= max(TOLERANCE * abs(gold), ZERO_SCALE)


def numeric_verdict(value: str, kind: str, gold: str, rule: str = ABSOLUTE_AND_RELATIVE) -> bool:
    """Whether a rendered value (the sandbox's text and kind, values.py) answers a numeric gold."""
    if kind not in (NUMBER, STRING):
        return False
    produced, expected = parse_number(value), parse_number(gold)
    return produced is not None and expected is not None and numbers_match(produced, expected, rule)


_MATHEMATICS = (NUMBER, STRING, COMPLEX, CONTAINER, EXPRESSION)  # kinds a symbolic gold can be answered by


def needs_math_verify(value: str, kind: str, gold: str) -> bool:
    """Whether a symbolic verdict takes math-verify; the rest is decided by `symbolic_verdict` alone."""
    if kind not in _MATHEMATICS or value.strip() == gold.strip():
        return False
    return not (kind in (NUMBER, STRING) and parse_number(value) is not None and parse_number(gold) is not None)


def symbolic_verdict(value: str, kind: str, gold: str, rule: str = ABSOLUTE_AND_RELATIVE) -> bool:
    """The verdict on a symbolic gold where math-verify is not needed: equal text, or two plain numbers."""
    if kind not in _MATHEMATICS:
        return False
    return value.strip() == gold.strip() or numeric_verdict(value, kind, gold, rule)


def _math_mode(text: str) -> str:
    text = text.strip()
    return text if text.startswith("$") or "\\boxed" in text else f"${text}$"


def verify_latex(value: str, gold: str) -> bool:
    """math-verify's verdict, without its signal-based timeouts: this runs in a sandbox child that is killed."""
    from math_verify import parse, verify

    gold_parsed = parse(_math_mode(gold), parsing_timeout=None)
    value_parsed = parse(_math_mode(value), parsing_timeout=None)
    return bool(gold_parsed and value_parsed and verify(gold_parsed, value_parsed, timeout_seconds=None))


# Imported by each sandbox worker before it forks, so that a judgement does not import them again.
MATH_VERIFY_MODULES = ("sympy", "math_verify", "latex2sympy2_extended", "envisions_flow.environments.math_answers")


def math_verify_verdicts(pairs: Sequence[tuple[str, str]], memory_mb: int, workers: int,
                         confinement: Confinement | None = None) -> list[str]:
    """CORRECT (""), WRONG_ANSWER or JUDGE_TIMEOUT for each (value, gold), each judged in its own sandbox child.

    math-verify's parser and sympy can take minutes or all memory on some inputs (9^{9^{9}}), and
    their timeouts use SIGALRM, which neither interrupts a long integer power nor works outside the
    main thread; a child that is killed after JUDGE_TIMEOUT_S does both.
    """
    from envisions_flow.environments.sandbox import MEMORY, TIMEOUT, Confinement, Limits, run_many

    if not pairs:
        return []
    calls = [(f"from envisions_flow.environments.math_answers import verify_latex\nVALUE = {value!r}\nGOLD = {gold!r}",
              "verify_latex(VALUE, GOLD)") for value, gold in pairs]
    outcomes = run_many(calls, Limits(timeout_s=JUDGE_TIMEOUT_S, memory_mb=memory_mb), workers,
                        preload=MATH_VERIFY_MODULES, confinement=confinement or Confinement())
    verdicts = []
    for outcome in outcomes:
        if outcome.error_class in (TIMEOUT, MEMORY):
            verdicts.append(JUDGE_TIMEOUT)
        else:  # an answer math-verify cannot read is simply not correct
            verdicts.append(CORRECT if outcome.value == "True" and not outcome.error_class else WRONG_ANSWER)
    return verdicts
