"""Math word problems solved by PAL-style Python programs (`def solution(): ... return result`)."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

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
from envisions_flow.environments.sandbox import Confinement, Limits, Outcome, run_many

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
    numeric_match: str = answers.ABSOLUTE_AND_RELATIVE  # config key execution.numeric_match
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    progress: bool = False
    confinement: Confinement = field(default_factory=Confinement)
    domain: str = "math"
    task_kinds = ("generated",)  # data it makes itself, beside file and hub data
    uses_sandbox = True  # its programs run in the kernel-confined sandbox (execution.sandbox)

    @classmethod
    def from_config(cls, domain: str, execution: Mapping[str, Any], options: Mapping[str, Any], dataset: Mapping[str, Any],
                    progress: bool) -> "MathEnvironment":
        return cls(answer_type=dataset.get("answer_type", answers.NUMERIC),
                   numeric_match=str(execution.get("numeric_match", answers.ABSOLUTE_AND_RELATIVE)),
                   **sandboxed_options(domain, execution, progress), **options)

    @staticmethod
    def holds_answer(spec: Mapping[str, Any]) -> tuple[Callable[[str], bool], str]:
        """Which gold answers the judge can credit, and what those are: one number for a numeric data set
        (ASDiv's "Yes", "3:30 p.m." or "5 (years old); 15 (years old)" is none), any text for a symbolic one."""
        if spec.get("answer_type", answers.NUMERIC) == answers.NUMERIC:
            def one_number(gold: str) -> bool:
                number = answers.parse_number(gold)
                return number is not None and math.isfinite(number)

            return one_number, "one number"
        return (lambda gold: gold.strip() != ""), "a non-empty text"

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
                                   progress=self.progress, confinement=self.confinement))
        )
        symbolic = self.answer_type == answers.SYMBOLIC
        judge = answers.symbolic_verdict if symbolic else answers.numeric_verdict
        results: dict[int, Execution] = {}
        for_math_verify: list[int] = []
        for index, task in enumerate(tasks):
            outcome = outcomes.get(index)
            if outcome is None:
                results[index] = Execution(0, None, NO_PROGRAM, 0.0)
            elif outcome.error_class:
                results[index] = Execution(0, None, outcome.error_class, outcome.duration_s)
            elif outcome.value is None:
                results[index] = Execution(0, None, NO_ANSWER, outcome.duration_s)
            elif symbolic and answers.needs_math_verify(outcome.value, outcome.kind, task.answer):
                for_math_verify.append(index)
            else:
                correct = judge(outcome.value, outcome.kind, task.answer, self.numeric_match)
                results[index] = _verdict(outcome, CORRECT if correct else WRONG_ANSWER)
        verdicts = answers.math_verify_verdicts([(outcomes[i].value, tasks[i].answer) for i in for_math_verify],
                                                self.limits.memory_mb, self.workers, self.confinement)
        for index, error_class in zip(for_math_verify, verdicts):
            results[index] = _verdict(outcomes[index], error_class)
        return [results[i] for i in range(len(tasks))]


def _verdict(outcome: Outcome, error_class: str) -> Execution:
    """b = 1 exactly when the judge found no fault; the value is kept either way."""
    return Execution(int(error_class == CORRECT), outcome.value, error_class, outcome.duration_s)
