from envisions_flow.environments.base import Task
from envisions_flow.environments.math import FEW_SHOT, MathEnvironment

ENV = MathEnvironment()


def test_extracts_the_first_fenced_block_whole():
    """Imports and helper functions above `def solution()` belong to the program."""
    program = "import math\n\ndef helper(x):\n    return math.sqrt(x)\n\ndef solution():\n    return helper(16)"
    completion = f"Here:\n```python\n{program}\n```\nand ```python\nx=1\n```"
    assert ENV.extract_program(completion) == program
    result, = ENV.execute([Task("a", "q", "4")], [ENV.extract_program(completion)])
    assert (result.b, result.value) == (1, "4.0")


def test_extracts_unclosed_block_and_bare_code():
    assert ENV.extract_program("```python\ndef solution():\n    return 1") == "def solution():\n    return 1"
    assert ENV.extract_program("sure. def solution():\n    return 2") == "def solution():\n    return 2"
    assert ENV.extract_program("The answer is 4.") == ""


def test_rendered_solution_round_trips_through_extraction():
    program = FEW_SHOT[0][1]
    assert ENV.extract_program(ENV.render_solution(program)) == program


def test_program_key_ignores_comments_and_layout():
    a = "def solution():\n    # add\n    return 1+2\n"
    b = "def solution():\n\n    return (1 + 2)"
    assert ENV.program_key(a) == ENV.program_key(b)
    assert ENV.program_key("def broken(:") == "def broken(:"


def test_prompts():
    task = Task("x", "What is 2+3?", "5")
    few = ENV.explore_prompt(task, few_shot=True)
    zero = ENV.explore_prompt(task, few_shot=False)
    assert len(few) == 7 and [m["role"] for m in few[:2]] == ["user", "assistant"]
    assert zero == few[-1:] and "What is 2+3?" in zero[0]["content"]
    refine = ENV.refine_prompt(task, "def solution():\n    return 6")
    assert "repair and refine" in refine[0]["content"] and "return 6" in refine[0]["content"]


def test_execute_classifies_every_outcome():
    tasks = [Task(str(i), "q", "5") for i in range(6)]
    programs = [
        "def solution():\n    return 2 + 3",
        "def solution():\n    return 6",
        "def solution():\n    x = 5",
        "",
        "def solution():\n    return 1 / 0",
        "def solution(:",
    ]
    results = ENV.execute(tasks, programs)
    assert [r.b for r in results] == [1, 0, 0, 0, 0, 0]
    assert [r.error_class for r in results] == ["", "wrong_answer", "no_answer", "no_program", "runtime", "syntax"]
    assert results[0].value == "5" and results[1].value == "6"
