"""The one environment protocol every domain implements.

The pipeline (sampling, execution, selection, training, evaluation) only talks
to this interface, so a domain is a prompt set, a program extractor and an
executor, never a copy of the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence

Messages = list[dict[str, str]]

# Error classes shared by every domain ("" = correct). Executors may add finer ones.
CORRECT = ""
WRONG_ANSWER = "wrong_answer"
NO_ANSWER = "no_answer"
NO_PROGRAM = "no_program"


@dataclass(frozen=True)
class Task:
    """One task input x with its answer y."""

    id: str
    question: str
    answer: str


@dataclass(frozen=True)
class Execution:
    """The environment's verdict on one program: binary reward b and why."""

    b: int
    value: str | None
    error_class: str
    duration_s: float


class Environment(Protocol):
    """What a domain provides to the self-training loop."""

    domain: str

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        """Chat messages asking the policy for a symbolic solution to `task`."""

    def refine_prompt(self, task: Task, program: str) -> Messages:
        """Chat messages asking the policy to repair or keep `program` (paper Appendix E)."""

    def extract_program(self, completion: str) -> str:
        """The program inside a completion ("" when there is none)."""

    def render_solution(self, program: str) -> str:
        """The completion text a policy is trained to produce for `program`."""

    def program_key(self, program: str) -> str:
        """A normalised form: two programs with the same key are duplicates."""

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        """Run each program against its task and judge the result."""


@dataclass(frozen=True)
class StepOutcome:
    """What follows an action: the next observation, the reward so far, whether the episode ended."""

    observation: str
    reward: float
    done: bool
    error_class: str


class StepEnvironment(Protocol):
    """A text environment in step mode (agents.py), deterministic given (task, actions)."""

    domain: str
    step_instruction: str  # how to act: the action language, shown before the first observation

    def replay(self, tasks: Sequence[Task], histories: Sequence[Sequence[str]]) -> list[StepOutcome]:
        """The outcome after the last action of each history, replayed in a fresh episode of its task."""


_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def chat(worked_examples: Sequence[tuple[str, str]], question: str) -> Messages:
    """User/assistant turns for worked examples (few-shot), then the question."""
    messages: Messages = []
    for user, assistant in worked_examples:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": question}]


def extract_fenced(completion: str, marker: str) -> str:
    """The first fenced block, whole; without a fence, the bare completion from `marker` on.

    A block is kept whole (a program's imports and helper functions sit above its entry
    point); a fenced block without the marker fails in the executor with an error class; a
    completion with neither fence nor marker holds no program ("").
    """
    match = _FENCE.search(completion)
    if match:
        return match.group(1).strip("\n").rstrip()
    start = completion.find(marker)
    return completion[start:].strip("\n").rstrip() if start >= 0 else ""
