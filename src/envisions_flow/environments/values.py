"""A program's return value as the sandbox hands it back: a short text and its kind.

The judge (math_answers.py) sees only this rendering, never the object: a program cannot hand the
judge an object whose comparison it controls. Every rendering calls the builtin types' own methods
(`int.__repr__`, `str.__getitem__`), so a subclass that overrides them changes nothing, and the text is
cut at _MAX_VALUE_CHARS. Imported by the sandbox's worker (`fork_server`): standard library only.
"""

from __future__ import annotations

import sys

_MAX_VALUE_CHARS = 1000
_CUT = slice(0, _MAX_VALUE_CHARS + 1)  # a character more than is kept: a longer text is marked TRUNCATED
_MAX_ITEMS = 100  # elements of a container that are rendered (its text is cut at _MAX_VALUE_CHARS anyway)
_MAX_DEPTH = 8  # nesting of containers that is rendered (a list holding itself ends here)


# The kind of value a program returned, beside its text: the judge (math_answers.py) credits only one number
# for a numeric gold, and the text alone cannot tell the number 18 from the list [18] rendered as a set.
NUMBER = "number"  # int, float, Fraction, Decimal, a numpy or sympy real scalar
COMPLEX = "complex"  # written a + bi
STRING = "string"
BOOL = "bool"
CONTAINER = "container"  # list, tuple, set, range, array: tuples as points, lists as solution sets
MAPPING = "mapping"  # a dict: no mathematical answer, whatever it holds
EXPRESSION = "expression"  # any other sympy object, as LaTeX
TRUNCATED = "truncated"  # longer than _MAX_VALUE_CHARS: what was cut off ("... or 36") is unknown
OTHER = "other"


def render_value(value: object) -> tuple[str | None, str]:
    """(text of at most _MAX_VALUE_CHARS, kind) of a return value; (None, "") for None.

    Values are read through their base types' own methods (int.__repr__, str slicing, the
    slots of Fraction and Rational), so a subclass cannot change what is recorded or pass the
    length cap. numpy, sympy, fractions and decimal are only looked at when already loaded,
    which they are whenever the program returned one of their objects.
    """
    if value is None:
        return None, ""
    try:
        text, kind = _math_text(value, 0)
    except Exception:  # noqa: BLE001 - an int past 4,300 digits, a property that raises: no plain value
        text, kind = "<unrenderable value>", OTHER
    if len(text) > _MAX_VALUE_CHARS:
        text, kind = str.__getitem__(text, slice(0, _MAX_VALUE_CHARS)), TRUNCATED
    return (text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")), kind


def _math_text(value: object, depth: int) -> tuple[str, str]:
    """The value written as mathematics, and its kind (see render_value)."""
    if value is True or value is False:
        return ("True" if value else "False"), BOOL
    if isinstance(value, str):
        return str.__getitem__(value, _CUT), STRING
    if isinstance(value, int):
        return int.__repr__(value), NUMBER
    if isinstance(value, float):
        return float.__repr__(value), NUMBER
    if isinstance(value, complex):
        parts = (complex.real.__get__(value), complex.imag.__get__(value))
        return _complex_text(*(_real_text(part) for part in parts)), COMPLEX
    if isinstance(value, (list, tuple, set, frozenset, range)):
        return _container_text(value, depth), CONTAINER
    if isinstance(value, dict):
        return _mapping_text(value, depth), MAPPING
    modules = sys.modules
    numpy, sympy = modules.get("numpy"), modules.get("sympy")
    fractions, decimal = modules.get("fractions"), modules.get("decimal")
    if fractions is not None and isinstance(value, fractions.Fraction):
        numerator = int.__repr__(fractions.Fraction._numerator.__get__(value))
        denominator = int.__repr__(fractions.Fraction._denominator.__get__(value))
        return (numerator if denominator == "1" else f"{numerator}/{denominator}"), NUMBER
    if decimal is not None and isinstance(value, decimal.Decimal):
        return decimal.Decimal.__str__(value), NUMBER
    if numpy is not None and isinstance(value, numpy.generic):
        return _math_text(numpy.generic.item(value), depth + 1)
    if numpy is not None and isinstance(value, numpy.ndarray):
        if numpy.ndarray.ndim.__get__(value) == 0:
            return _math_text(numpy.ndarray.item(value), depth + 1)
        if numpy.ndarray.size.__get__(value) > _MAX_ITEMS * _MAX_ITEMS:
            return f"array of shape {numpy.ndarray.shape.__get__(value)}", CONTAINER
        return _container_text(numpy.ndarray.tolist(value), depth), CONTAINER
    if sympy is not None and isinstance(value, (sympy.Basic, sympy.MatrixBase)):
        return _sympy_text(sympy, value)
    return str.__getitem__(str(value), _CUT), OTHER


def _real_text(number: float) -> str:
    """A part of a complex number: 6.0 as 6."""
    if number.is_integer() and abs(number) < 2**53:
        return int.__repr__(int(number))
    return float.__repr__(number)


def _complex_text(real: str, imaginary: str) -> str:
    """a + bi, the way MATH writes its answers (6 - 5i, i, -2i)."""
    coefficient = {"1": "", "-1": "-"}.get(imaginary, imaginary)
    if real in {"0", "-0"}:
        return f"{coefficient}i"
    if coefficient.startswith("-"):
        return f"{real} - {coefficient[1:]}i"
    return f"{real} + {coefficient}i"


def _container_text(value: object, depth: int) -> str:
    """Tuples as points (1, 2), sets as \\{1, 2\\}, a returned list as the solution set 1, 2."""
    if depth >= _MAX_DEPTH:
        return "\\ldots"
    if isinstance(value, (set, frozenset)):
        items = set.__iter__(value) if isinstance(value, set) else frozenset.__iter__(value)
        return "\\{" + _items_text(items, depth) + "\\}"
    if isinstance(value, tuple):
        return "(" + _items_text(tuple.__iter__(value), depth) + ")"
    items = _items_text(iter(value) if isinstance(value, range) else list.__iter__(value), depth)
    return items if depth == 0 else f"({items})"


def _mapping_text(value: dict, depth: int) -> str:
    if depth >= _MAX_DEPTH:
        return "\\ldots"
    pairs = ((_math_text(key, depth + 1)[0], _math_text(item, depth + 1)[0]) for key, item in dict.items(value))
    return "{" + _items_text((f"{key}: {item}" for key, item in pairs), depth) + "}"


def _items_text(items: object, depth: int) -> str:
    """The first _MAX_ITEMS items, comma-separated."""
    parts: list[str] = []
    size = 0
    for item in items:
        if len(parts) == _MAX_ITEMS or size > _MAX_VALUE_CHARS:
            parts.append("\\ldots")
            break
        text = _math_text(item, depth + 1)[0]
        parts.append(text)
        size += len(text) + 2
    return ", ".join(parts)


def _sympy_text(sympy: object, value: object) -> tuple[str, str]:
    """Rationals and Floats as numbers, complex numbers as a + bi, anything else as sympy's LaTeX."""
    if isinstance(value, sympy.Rational):  # p and q are slots, or class attributes of the singletons (S.Half)
        numerator, denominator = int.__repr__(value.p), int.__repr__(value.q)
        return (numerator if denominator == "1" else f"{numerator}/{denominator}"), NUMBER
    if isinstance(value, sympy.Float):
        return float.__repr__(sympy.Float.__float__(value)), NUMBER
    if isinstance(value, sympy.Basic) and value.is_number and value.has(sympy.I):
        real, imaginary = value.as_real_imag()
        if imaginary != 0:
            return _complex_text(str.__str__(sympy.latex(real)), str.__str__(sympy.latex(imaginary))), COMPLEX
    return str.__getitem__(sympy.latex(value), _CUT), EXPRESSION
