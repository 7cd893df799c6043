import pytest

from envisions_flow.environments.math_answers import NUMERIC, SYMBOLIC, is_correct, parse_number, unbox


@pytest.mark.parametrize(
    ("value", "gold", "expected"),
    [
        ("42", "42", True),
        ("42.0", "42", True),
        ("1000", "1,000", True),
        ("0.75", "3/4", True),
        ("3/4", "0.75", True),
        ("0.3333", "1/3", True),
        ("0.33", "1/3", False),
        ("18.000001", "18", True),
        ("18.01", "18", False),
        ("$12.50", "12.5", True),
        ("12", "\\boxed{12}", True),
        ("-5", "5", False),
        ("1e6", "1000000", True),
        (None, "3", False),
        ("no number here", "3", False),
        ("inf", "3", False),
        ("True", "1", False),
    ],
)
def test_numeric_comparison(value, gold, expected):
    assert is_correct(value, gold, NUMERIC) is expected


def test_relative_tolerance_scales_with_magnitude():
    assert is_correct("1000050", "1000000", NUMERIC)
    assert not is_correct("1000200", "1000000", NUMERIC)


@pytest.mark.parametrize(
    ("value", "gold", "expected"),
    [
        ("0.5", "\\frac{1}{2}", True),
        ("1/2", "\\frac{1}{2}", True),
        ("2*sqrt(2)", "2\\sqrt{2}", True),
        ("3", "\\frac{1}{2}", False),
    ],
)
def test_symbolic_comparison_uses_math_verify(value, gold, expected):
    assert is_correct(value, gold, SYMBOLIC) is expected


def test_unbox_takes_the_last_balanced_box():
    assert unbox("so \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert parse_number("\\boxed{\\frac{3}{4}}") == 0.75
    assert parse_number("9 (apples)") == 9
