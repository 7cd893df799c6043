"""A text environment that acts in step mode too: the worked example of docs/environments.md.

The task shows a counter and a target ("Value: 0. Target: 2."). Actions are `inc`, `dec` and `submit`;
`submit` ends the episode with reward 1 when the value equals the target, 0 otherwise, and anything else
ends it with `invalid_action`. Episodes are pure functions of (task, actions), so `replay` simply
recomputes them: that is all the agent methods (IPR, the synthetic mixtures) ask of a step environment.
A whole program is the actions one per line, so ENVISIONS and its baselines run on it as well, and a
whole-program run's solutions become expert trajectories (`program_steps`). Being this small, it also
gives tests step rewards known in closed form.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from envisions_flow.datasets.loaders import DataError
from envisions_flow.environments.base import (
    CORRECT,
    NO_PROGRAM,
    WRONG_ANSWER,
    Execution,
    Messages,
    StepOutcome,
    Task,
    chat,
)

INVALID_ACTION = "invalid_action"
NOT_SUBMITTED = "not_submitted"
ACTIONS = ("inc", "dec", "submit")

_STATE = re.compile(r"Value:\s*(-?\d+)\.\s*Target:\s*(-?\d+)\.")
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

PROGRAM_INSTRUCTION = ("Bring the value to the target. Write the actions, one per line: inc (add 1), dec (subtract "
                       "1), and submit last. Reply with one ``` code block.")
REFINE_TEMPLATE = ("You are provided with actions that should bring the value to the target. You can either repair "
                   "them, or simply return them. Reply with one ``` code block.\n\nThe task is:\n{question}\n\n"
                   "The current actions are:\n```\n{program}\n```\n\nThe solution actions are:")


def counter_task(task_id: str, value: int, target: int) -> Task:
    """A task whose first observation shows `value` and `target`; the answer is the target."""
    return Task(task_id, observe(value, target), str(target))


def observe(value: int, target: int) -> str:
    return f"Value: {value}. Target: {target}."


@dataclass
class CounterEnvironment:
    """Move a counter to its target, then submit."""

    domain: str = "counter"
    step_instruction: str = (
        "Bring the value to the target. Actions: inc (add 1), dec (subtract 1), submit (end the episode; "
        "reward 1 when the value equals the target). Reply with 'Thought: <reasoning>' and then "
        "'Action: <one action>'."
    )
    task_kinds = ("generated",)

    @classmethod
    def from_config(cls, domain: str, execution: Mapping[str, Any], options: Mapping[str, Any], dataset: Mapping[str, Any],
                    progress: bool) -> "CounterEnvironment":
        return cls(**options)

    @staticmethod
    def load_tasks(spec: dict[str, Any], key: str) -> pd.DataFrame:
        """`kind: generated`: `n` seeded tasks whose target lies 1 to 3 steps from the value."""
        n = int(spec.get("n", 0))
        if n <= 0:
            raise DataError(f"{key}.n: generated counter tasks need n > 0")
        r = random.Random(f"{spec.get('seed', 0)}:{spec.get('split', 'train')}")
        name = spec.get("name", key.split(".")[-1])
        rows = []
        for index in range(n):
            value = r.randint(-3, 3)
            task = counter_task(f"{name}-{index}", value, value + r.choice([-3, -2, -1, 1, 2, 3]))
            rows.append({"id": task.id, "question": task.question, "answer": task.answer, "source": name})
        return pd.DataFrame(rows)

    # ---- whole programs (ENVISIONS and its baselines) ---------------------------------------------

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        example = (f"{PROGRAM_INSTRUCTION}\n\n{observe(1, 3)}", self.render_solution("inc\ninc\nsubmit"))
        return chat([example] if few_shot else [], f"{PROGRAM_INSTRUCTION}\n\n{task.question}")

    def refine_prompt(self, task: Task, program: str) -> Messages:
        content = REFINE_TEMPLATE.format(question=task.question, program=program.strip() or "(no actions)")
        return [{"role": "user", "content": content}]

    def extract_program(self, completion: str) -> str:
        fenced = _FENCE.search(completion)
        lines = (fenced.group(1) if fenced else completion).splitlines()
        return "\n".join(line.strip().lower() for line in lines if line.strip().lower() in ACTIONS)

    def render_solution(self, program: str) -> str:
        return f"```\n{program.strip()}\n```"

    def program_key(self, program: str) -> str:
        return "\n".join(self.program_steps(program))

    def program_steps(self, program: str) -> list[str]:
        return [line.strip() for line in program.splitlines() if line.strip()]

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        results = []
        for task, program in zip(tasks, programs):
            if not program.strip():
                results.append(Execution(0, None, NO_PROGRAM, 0.0))
                continue
            outcome = self._episode(task, self.program_steps(program))
            error_class = outcome.error_class if outcome.done else NOT_SUBMITTED
            results.append(Execution(int(outcome.reward == 1.0), format(outcome.reward, "g"), error_class, 0.0))
        return results

    # ---- step mode (IPR, the synthetic mixtures) --------------------------------------------------

    def replay(self, tasks: Sequence[Task], histories: Sequence[Sequence[str]]) -> list[StepOutcome]:
        return [self._episode(task, history) for task, history in zip(tasks, histories)]

    def _episode(self, task: Task, history: Sequence[str]) -> StepOutcome:
        state = _STATE.search(task.question)
        if state is None:
            raise ValueError(f"counter task {task.id!r}: its question does not read 'Value: <n>. Target: <n>.'")
        value, target = int(state.group(1)), int(state.group(2))
        for action in history:
            action = action.strip().lower()
            if action == "inc":
                value += 1
            elif action == "dec":
                value -= 1
            elif action == "submit":
                return StepOutcome("", float(value == target), True, CORRECT if value == target else WRONG_ANSWER)
            else:
                return StepOutcome("", 0.0, True, INVALID_ACTION)
        return StepOutcome(observe(value, target), 0.0, False, "")
