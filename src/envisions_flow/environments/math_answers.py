"""Judging a produced value against a gold answer.

Numeric answers ("1,000", "$12.50", "3/4", "\\boxed{7}", "42 apples") compare as
numbers with a relative tolerance; symbolic answers (MATH) go to math-verify,
which knows LaTeX equivalence far better than regexes of ours would.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

NUMERIC = "numeric"
SYMBOLIC = "symbolic"
REL_TOL = 1e-4

_BOXED = re.compile(r"\\boxed\s*\{")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d*)?)?")


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


def parse_number(text: str | None) -> float | None:
    """Read the first number in an answer string; None if there is none."""
    if text is None:
        return None
    cleaned = unbox(str(text)).replace(",", "").replace("$", "").replace("\\%", "").replace("%", "")
    frac = re.fullmatch(r"\s*\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}\s*", cleaned)
    if frac:
        cleaned = f"{frac.group(1)}/{frac.group(2)}"
    if cleaned.strip().lower() in {"true", "false"}:
        return None
    match = _NUMBER.search(cleaned)
    if not match:
        return None
    token = match.group(0).replace(" ", "")
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            return float(Fraction(numerator) / Fraction(denominator))
        return float(token)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def numbers_match(value: float, gold: float) -> bool:
    """Equal within REL_TOL relative (and 1e-4 absolute, as the authors' checker, near zero)."""
    return math.isclose(value, gold, rel_tol=REL_TOL, abs_tol=1e-4)


def is_correct(value: str | None, gold: str, answer_type: str = NUMERIC) -> bool:
    """Whether a produced value answers the gold answer."""
    if value is None:
        return False
    if value.strip() == gold.strip():
        return True
    if answer_type == SYMBOLIC:
        return _symbolic_match(value, gold)
    produced, expected = parse_number(value), parse_number(gold)
    if produced is None or expected is None or not math.isfinite(produced):
        return False
    return numbers_match(produced, expected)


def _symbolic_match(value: str, gold: str) -> bool:
    from math_verify import parse, verify

    def wrap(text: str) -> str:
        text = text.strip()
        return text if text.startswith("$") or "\\boxed" in text else f"${text}$"

    try:
        gold_parsed = parse(wrap(gold), parsing_timeout=None)
        value_parsed = parse(wrap(value), parsing_timeout=None)
        return bool(gold_parsed and value_parsed and verify(gold_parsed, value_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not correct
        return False
