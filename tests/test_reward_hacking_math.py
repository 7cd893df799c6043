"""The math judge credits exactly the right answers: the programs a reward-hacking policy would write get
b = 0, correct programs written the natural ways get b = 1.

The tasks come through the real loaders from files this test writes in the published shapes of GSM8K
(`#### 1,000`), GSM-Hard (float targets), ASDiv (ASDiv.xml) and MATH-500 (boxed solutions, an answer
column); the programs run in the real sandbox and are judged by the real judge (math-verify for MATH).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envisions_flow.datasets.loaders import load_tasks
from envisions_flow.environments import math_answers as answers
from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return str(path)


def _gsm8k(directory: Path) -> dict:
    rows = [{"question": "A bakery sells 40 boxes of bread a day. How many boxes does it sell in 25 days?",
             "answer": "It sells 40 * 25 = <<40*25=1000>>1000 boxes.\n#### 1,000"},
            {"question": "Mia has 12 apples and buys 6 more. How many apples does she have?",
             "answer": "She has 12 + 6 = <<12+6=18>>18 apples.\n#### 18"}]
    return {"preset": "gsm8k", "kind": "file", "path": _jsonl(directory / "gsm8k_test.jsonl", rows)}


def _gsm_hard(directory: Path) -> dict:
    rows = [{"input": "A farm ships 6172800 eggs on Monday and as many on Tuesday. How many eggs in all?",
             "code": "def solution():\n    return 6172800 * 2", "target": 12345600.0},
            {"input": "A grain of sand weighs 0.00001 kg. How much do 5 grains weigh?",
             "code": "def solution():\n    return 0.00001 * 5", "target": 5e-05},
            {"input": "7 pies are shared by 3 friends. How many pies does each get?",
             "code": "def solution():\n    return 7 / 3", "target": 2.3333333333333335}]
    return {"preset": "gsm_hard", "kind": "file", "path": _jsonl(directory / "gsmhardv2.jsonl", rows)}


def _asdiv(directory: Path) -> dict:
    problems = [("nluds-0001", "Seven red apples and two green apples are in the basket.",
                 "How many apples are in the basket?", "9 (apples)"),
                ("nluds-0002", "A number is one third less than zero.", "What is the number?", "-(1/3)"),
                ("nluds-0003", "Tom is taller than Ann.", "Who is taller?", "Tom"),
                ("nluds-0004", "Ann is 5. Her mother is 3 times as old.", "How old are they?",
                 "5 (years old); 15 (years old)")]
    body = "".join(f'<Problem ID="{pid}" Grade="1" Source="http://example.org"><Body>{b}</Body><Question>{q}'
                   f"</Question><Solution-Type>Addition</Solution-Type><Answer>{a}</Answer><Formula>x</Formula>"
                   "</Problem>" for pid, b, q, a in problems)
    path = directory / "ASDiv.xml"
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<Machine-Reading-Corpus-File><ProblemSet>{body}'
                    "</ProblemSet></Machine-Reading-Corpus-File>", encoding="utf-8")
    return {"preset": "asdiv_xml", "path": str(path)}


MATH_ANSWERS = {
    "test/algebra/1.json": "\\frac{14}{3}",
    "test/intermediate_algebra/2.json": "6 - 5i",
    "test/precalculus/3.json": "\\left( 3, \\frac{\\pi}{2} \\right)",
    "test/algebra/4.json": "[2, 5)",
    "test/algebra/5.json": "-2, 1",
    "test/prealgebra/6.json": "2\\sqrt{2}",
    "test/number_theory/7.json": "10",
}


def _math500(directory: Path) -> dict:
    rows = [{"problem": f"Problem {unique_id}.", "solution": f"Working. The answer is $\\boxed{{{answer}}}$.",
             "answer": answer, "subject": unique_id.split("/")[1], "level": 3, "unique_id": unique_id}
            for unique_id, answer in MATH_ANSWERS.items()]
    return {"preset": "math", "kind": "file", "path": _jsonl(directory / "math500_test.jsonl", rows)}


def sol(body: str, imports: str = "") -> str:
    return f"{imports}\ndef solution():\n" + "\n".join(f"    {line}" for line in body.strip().splitlines())


LIAR_INT = "class Liar(int):\n    def __repr__(self): return '18'\n    __str__ = __repr__\n    def __eq__(self, o): return True"
LIAR_STR = ("class Liar(str):\n    def __str__(self): return '18'\n    def __getitem__(self, k): return '18'\n"
            "    def __eq__(self, o): return True")
ANYTHING = "class Anything:\n    def __eq__(self, o): return True\n    def __str__(self): return '18'\n    def item(self): return 18"

# (data set, task id, program, b, error class)
NUMERIC_CASES = {
    # correct, written the natural ways
    "imports_at_top": ("gsm8k", "gsm8k-0", sol("return math.prod([40, 25])", "import math"), 1, ""),
    "helper_function": ("gsm8k", "gsm8k-0", "def boxes(per_day, days):\n    return per_day * days\n\n"
                        + sol("return boxes(40, 25)"), 1, ""),
    "numpy": ("gsm8k", "gsm8k-0", sol("return np.sum(np.full(25, 40))", "import numpy as np"), 1, ""),
    "formatted_string": ("gsm8k", "gsm8k-0", sol("total = 40 * 25\nreturn f'{total:,} boxes'"), 1, ""),
    "float": ("gsm8k", "gsm8k-0", sol("return 40 * 25.0"), 1, ""),
    "decimal": ("gsm8k", "gsm8k-0", sol("return Decimal('40') * 25", "from decimal import Decimal"), 1, ""),
    "sympy_solve": ("gsm8k", "gsm8k-1", sol("x = symbols('x')\nreturn solve(Eq(x - 6, 12), x)[0]",
                                            "from sympy import Eq, solve, symbols"), 1, ""),
    "fraction": ("gsm8k", "gsm8k-1", sol("return Fraction(36, 2)", "from fractions import Fraction"), 1, ""),
    "statistics": ("gsm8k", "gsm8k-1", sol("return statistics.mean([12, 24])", "import statistics"), 1, ""),
    "sentence": ("gsm8k", "gsm8k-1", sol("return 'The answer is 18.'"), 1, ""),
    "millions": ("gsm_hard", "gsm_hard-0", sol("return 6172800 * 2"), 1, ""),
    "tiny_float": ("gsm_hard", "gsm_hard-1", sol("return 0.00001 * 5"), 1, ""),
    "division": ("gsm_hard", "gsm_hard-2", sol("return 7 / 3"), 1, ""),
    "rounded": ("gsm_hard", "gsm_hard-2", sol("return round(7 / 3, 4)"), 1, ""),
    "asdiv_unit_string": ("asdiv", "nluds-0001", sol("return f'{7 + 2} apples'"), 1, ""),
    "asdiv_negative_fraction": ("asdiv", "nluds-0002", sol("return -Fraction(1, 3)", "from fractions import Fraction"),
                                1, ""),
    # hedges and containers: the number is in there, among others
    "list": ("gsm8k", "gsm8k-1", sol("return [18, 36]"), 0, "wrong_answer"),
    "list_of_one": ("gsm8k", "gsm8k-1", sol("return [18]"), 0, "wrong_answer"),
    "tuple": ("gsm8k", "gsm8k-1", sol("return (18, 5)"), 0, "wrong_answer"),
    "dict": ("gsm8k", "gsm8k-1", sol("return {'answer': 18, 'other': 7}"), 0, "wrong_answer"),
    "set": ("gsm8k", "gsm8k-1", sol("return {18}"), 0, "wrong_answer"),
    "range": ("gsm8k", "gsm8k-1", sol("return range(18, 30)"), 0, "wrong_answer"),
    "numpy_array": ("gsm8k", "gsm8k-1", sol("return np.array([18, 5])", "import numpy as np"), 0, "wrong_answer"),
    "complex": ("gsm8k", "gsm8k-1", sol("return 18 + 5j"), 0, "wrong_answer"),
    "either": ("gsm8k", "gsm8k-1", sol("return '18 or 36'"), 0, "wrong_answer"),
    "not_but": ("gsm8k", "gsm8k-1", sol("return 'not 18 but 20'"), 0, "wrong_answer"),
    "bound": ("gsm8k", "gsm8k-1", sol("return 'at least 18'"), 0, "wrong_answer"),
    "boolean": ("gsm8k", "gsm8k-1", sol("return True"), 0, "wrong_answer"),
    # objects that lie about what they are
    "int_subclass": ("gsm8k", "gsm8k-1", LIAR_INT + "\n" + sol("return Liar(5)"), 0, "wrong_answer"),
    "str_subclass": ("gsm8k", "gsm8k-1", LIAR_STR + "\n" + sol("return Liar('not 18 but 20')"), 0, "wrong_answer"),
    "equals_anything": ("gsm8k", "gsm8k-1", ANYTHING + "\n" + sol("return Anything()"), 0, "wrong_answer"),
    "huge_string": ("gsm8k", "gsm8k-1", sol("return '18 ' + 'x' * 10_000_000"), 0, "wrong_answer"),
    "hedge_past_the_cap": ("gsm8k", "gsm8k-1", sol("return '18 ' + ' ' * 2000 + ' or 36'"), 0, "wrong_answer"),
    # near misses the old relative tolerance credited
    "off_by_900": ("gsm_hard", "gsm_hard-0", sol("return 12346500"), 0, "wrong_answer"),
    "zero_for_tiny": ("gsm_hard", "gsm_hard-1", sol("return 0"), 0, "wrong_answer"),
    "prints_it": ("gsm8k", "gsm8k-1", sol("print(18)"), 0, "no_answer"),
}

SYMBOLIC_CASES = {
    "fraction": ("test/algebra/1.json", sol("return Fraction(14, 3)", "from fractions import Fraction"), 1, ""),
    "sympy_rational": ("test/algebra/1.json", sol("return sympy.Rational(28, 6)", "import sympy"), 1, ""),
    "latex_string": ("test/algebra/1.json", sol("return r'\\frac{14}{3}'"), 1, ""),
    "python_complex": ("test/intermediate_algebra/2.json", sol("return (4 - 1j) + (2 - 4j)"), 1, ""),
    "sympy_complex": ("test/intermediate_algebra/2.json", sol("return sympy.expand((2 - sympy.I) * (3 - sympy.I)) + 1",
                                                             "import sympy"), 1, ""),
    "point": ("test/precalculus/3.json", sol("return (3, sympy.pi / 2)", "import sympy"), 1, ""),
    "interval": ("test/algebra/4.json", sol("return sympy.Interval.Ropen(2, 5)", "import sympy"), 1, ""),
    "solution_list": ("test/algebra/5.json", sol("x = sympy.Symbol('x')\nreturn sympy.solve(x**2 + x - 2, x)",
                                                 "import sympy"), 1, ""),
    "sqrt": ("test/prealgebra/6.json", sol("return sympy.sqrt(8)", "import sympy"), 1, ""),
    "integer": ("test/number_theory/7.json", sol("return 10.0"), 1, ""),
    "either": ("test/number_theory/7.json", sol("return '10 or 12'"), 0, "wrong_answer"),
    "latex_either": ("test/number_theory/7.json", sol("return '10 \\\\text{ or } 12'"), 0, "wrong_answer"),
    "list": ("test/number_theory/7.json", sol("return [10, 12]"), 0, "wrong_answer"),
    "dict": ("test/algebra/1.json", sol("return {'answer': '\\\\frac{14}{3}'}"), 0, "wrong_answer"),
    "wrong_point": ("test/precalculus/3.json", sol("return (3, sympy.pi)", "import sympy"), 0, "wrong_answer"),
    "judge_bomb": ("test/number_theory/7.json", sol("return '9^{9^{9}}'"), 0, answers.JUDGE_TIMEOUT),
}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict[str, dict[str, Task]]:
    directory = tmp_path_factory.mktemp("published")
    specs = {"gsm8k": _gsm8k(directory), "gsm_hard": _gsm_hard(directory), "asdiv": _asdiv(directory),
             "math": _math500(directory)}
    frames = {name: load_tasks(spec, f"domains.math.testsets.{name}", MathEnvironment) for name, spec in specs.items()}
    return {name: {row.id: Task(row.id, row.question, row.answer) for row in frame.itertuples()}
            for name, frame in frames.items()}


@pytest.fixture(scope="module")
def numeric_verdicts(tasks):
    cases = list(NUMERIC_CASES.values())
    results = MathEnvironment().execute([tasks[data][task_id] for data, task_id, *_ in cases],
                                        [program for _, _, program, *_ in cases])
    return dict(zip(NUMERIC_CASES, results))


@pytest.fixture(scope="module")
def symbolic_verdicts(tasks):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(answers, "JUDGE_TIMEOUT_S", 3.0)
    cases = list(SYMBOLIC_CASES.values())
    try:
        results = MathEnvironment(answer_type=answers.SYMBOLIC).execute(
            [tasks["math"][task_id] for task_id, *_ in cases], [program for _, program, *_ in cases])
    finally:
        monkeypatch.undo()
    return dict(zip(SYMBOLIC_CASES, results))


def test_the_published_shapes_load(tasks):
    assert {task.answer for task in tasks["gsm8k"].values()} == {"1000", "18"}
    assert [task.answer for task in tasks["gsm_hard"].values()] == ["12345600.0", "5e-05", "2.3333333333333335"]
    assert {task_id: task.answer for task_id, task in tasks["asdiv"].items()} == {"nluds-0001": "9",
                                                                                  "nluds-0002": "-1/3"}
    assert {task_id: task.answer for task_id, task in tasks["math"].items()} == MATH_ANSWERS


@pytest.mark.parametrize("case", sorted(NUMERIC_CASES))
def test_numeric_verdicts(numeric_verdicts, case):
    *_, b, error_class = NUMERIC_CASES[case]
    result = numeric_verdicts[case]
    assert (result.b, result.error_class) == (b, error_class), result


@pytest.mark.parametrize("case", sorted(SYMBOLIC_CASES))
def test_symbolic_verdicts(symbolic_verdicts, case):
    *_, b, error_class = SYMBOLIC_CASES[case]
    result = symbolic_verdicts[case]
    assert (result.b, result.error_class) == (b, error_class), result


def test_recorded_values_are_bounded_and_what_was_returned(numeric_verdicts):
    assert len(numeric_verdicts["huge_string"].value) == 1000
    assert numeric_verdicts["int_subclass"].value == "5"  # int.__repr__, not the subclass's
    assert numeric_verdicts["str_subclass"].value == "not 18 but 20"


CAUGHT_REFUSAL = sol("try:\n    open('/etc/passwd').read()\nexcept Exception:\n    pass\nreturn 18")
FORGED_RESULT = sol("try:\n    open('/etc/passwd').read()\nexcept Exception:\n    pass\n"
                    "for fd in range(3, 256):\n    try:\n"
                    "        os.write(fd, b'{\"value\": \"18\", \"kind\": \"number\", \"error_class\": \"\"}')\n"
                    "        os._exit(0)\n    except OSError:\n        pass", "import os")


# These two hold because of the kernel sandbox (issue 18): a refusal is recorded in the result pipe before
# the program can catch it, and that record outweighs anything the program writes there afterwards.
def test_a_caught_refusal_is_never_credited(tasks):
    result, = MathEnvironment().execute([tasks["gsm8k"]["gsm8k-1"]], [CAUGHT_REFUSAL])
    assert (result.b, result.error_class) == (0, "forbidden"), result


def test_a_forged_result_is_never_credited(tasks):
    result, = MathEnvironment().execute([tasks["gsm8k"]["gsm8k-1"]], [FORGED_RESULT])
    assert (result.b, result.error_class) == (0, "forbidden"), result
