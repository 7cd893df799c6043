"""Math word problems solved by PAL-style Python programs (`def solution(): ... return result`)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from envisions_flow.environments import math_answers as answers
from envisions_flow.environments.base import (
    CORRECT,
    NO_ANSWER,
    NO_PROGRAM,
    WRONG_ANSWER,
    Execution,
    Messages,
    Task,
    chat,
    extract_fenced,
)
from envisions_flow.environments.registry import sandboxed_options
from envisions_flow.environments.sandbox import Limits, run_many

INSTRUCTION = (
    "Solve the math problem by writing a Python function `solution()` that computes and returns "
    "the final answer as a number. Reply with one ```python code block."
)

# Three worked examples for the cold-start prompt of iteration 1 (PAL style).
FEW_SHOT = [
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "def solution():\n    money_initial = 23\n    bagels = 5\n    bagel_cost = 3\n"
        "    money_spent = bagels * bagel_cost\n    result = money_initial - money_spent\n    return result",
    ),
    (
        "Michael had 58 golf balls. On Tuesday, he lost 23 golf balls. On Wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of Wednesday?",
        "def solution():\n    golf_balls_initial = 58\n    golf_balls_lost_tuesday = 23\n"
        "    golf_balls_lost_wednesday = 2\n"
        "    result = golf_balls_initial - golf_balls_lost_tuesday - golf_balls_lost_wednesday\n    return result",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, "
        "from Monday to Thursday. How many computers are now in the server room?",
        "def solution():\n    computers_initial = 9\n    computers_per_day = 5\n    num_days = 4\n"
        "    computers_added = computers_per_day * num_days\n    result = computers_initial + computers_added\n"
        "    return result",
    ),
]

# Appendix E's self-refine prompt, plus the reply format (a 135M model ignores the prompt without it).
REFINE_TEMPLATE = (
    "You are provided with a Python code to solve the given problem. You can either repair and refine it, "
    "or simply return the original solution. Reply with one ```python code block that defines `solution()`."
    "\n\nThe question is:\n{question}\n\n"
    "The current Python code is:\n```python\n{program}\n```\n\nThe solution code is:"
)

def _question_turn(question: str) -> str:
    return f"{INSTRUCTION}\n\nQuestion: {question}"


@dataclass
class MathEnvironment:
    """Python executor environment for GSM8K-, SVAMP-, ASDiv-, GSM-Hard- and MATH-style data."""

    answer_type: str = answers.NUMERIC
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    progress: bool = False
    domain: str = "math"
    task_kinds = ("generated",)  # data it makes itself, beside file and hub data

    @classmethod
    def from_config(cls, execution: Mapping[str, Any], options: Mapping[str, Any], dataset: Mapping[str, Any],
                    progress: bool) -> "MathEnvironment":
        return cls(answer_type=dataset.get("answer_type", answers.NUMERIC), **sandboxed_options(execution, progress),
                   **options)

    @staticmethod
    def load_tasks(spec: dict[str, Any], key: str) -> pd.DataFrame:
        """`kind: generated`: seeded grade-school word problems (the demo's data)."""
        from envisions_flow.datasets.word_problems import generate_word_problems

        return generate_word_problems(spec, key)

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        examples = [(_question_turn(q), self.render_solution(p)) for q, p in FEW_SHOT] if few_shot else []
        return chat(examples, _question_turn(task.question))

    def refine_prompt(self, task: Task, program: str) -> Messages:
        content = REFINE_TEMPLATE.format(question=task.question, program=program.strip() or "# (no code)")
        return [{"role": "user", "content": content}]

    def extract_program(self, completion: str) -> str:
        return extract_fenced(completion, "def solution(")

    def render_solution(self, program: str) -> str:
        return f"```python\n{program.strip()}\n```"

    def program_key(self, program: str) -> str:
        try:
            return ast.unparse(ast.parse(program))
        except (SyntaxError, ValueError, RecursionError):
            return "\n".join(line.rstrip() for line in program.strip().splitlines() if line.strip())

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        runnable = [i for i, program in enumerate(programs) if program.strip()]
        outcomes = dict(
            zip(runnable, run_many([(programs[i], "solution()") for i in runnable], self.limits, self.workers,
                                   progress=self.progress))
        )
        results: list[Execution] = []
        for index, task in enumerate(tasks):
            outcome = outcomes.get(index)
            if outcome is None:
                results.append(Execution(0, None, NO_PROGRAM, 0.0))
            elif outcome.error_class:
                results.append(Execution(0, None, outcome.error_class, outcome.duration_s))
            elif outcome.value is None:
                results.append(Execution(0, None, NO_ANSWER, outcome.duration_s))
            elif answers.is_correct(outcome.value, task.answer, self.answer_type):
                results.append(Execution(1, outcome.value, CORRECT, outcome.duration_s))
            else:
                results.append(Execution(0, outcome.value, WRONG_ANSWER, outcome.duration_s))
        return results
