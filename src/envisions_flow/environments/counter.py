"""A minimal text environment in step mode: the worked example of docs/text-environments.md.

The task shows a counter and a target ("Value: 0. Target: 2."). Actions are `inc`, `dec`
and `submit`; `submit` ends the episode with reward 1 when the value equals the target, 0
otherwise, and anything else ends it with `invalid_action`. Episodes are pure functions of
(task, actions), so `replay` simply recomputes them: that is all `agents.StepEnvironment`
asks. Being this small, it also gives tests step rewards known in closed form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from envisions_flow.environments.base import StepOutcome, Task

INVALID_ACTION = "invalid_action"

_STATE = re.compile(r"Value:\s*(-?\d+)\.\s*Target:\s*(-?\d+)\.")


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
                return StepOutcome("", float(value == target), True, "" if value == target else "wrong_answer")
            else:
                return StepOutcome("", 0.0, True, INVALID_ACTION)
        return StepOutcome(observe(value, target), 0.0, False, "")
