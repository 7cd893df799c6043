"""Logical reasoning (ProofWriter, RuleTaker) solved by Logic-LM programs run by clingo."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from ..sandbox import DEFAULT_PRELOAD, Limits, run_many
from .base import CORRECT, NO_PROGRAM, WRONG_ANSWER, Execution, Messages, Task

INSTRUCTION = (
    "Translate the problem into a logic program with the sections Predicates, Facts, Rules and Query. "
    "Every atom ends with its truth value (True or False), variables start with $, && joins premises, "
    ">>> leads to the conclusion and ::: starts a comment. Reply with one ``` code block."
)

# One worked example for the cold-start prompt of iteration 1 (Logic-LM's format).
ONE_SHOT = (
    "Theory: Anne is furry. Anne chases Bob. Bob is not big. If someone is furry and they chase Bob then "
    "they are nice. If someone is nice then they are kind.\n"
    "Statement: Anne is kind.\nIs the statement True, False or Unknown?",
    "Predicates:\nFurry($x, bool) ::: Is x furry?\nChases($x, $y, bool) ::: Does x chase y?\n"
    "Big($x, bool) ::: Is x big?\nNice($x, bool) ::: Is x nice?\nKind($x, bool) ::: Is x kind?\n"
    "Facts:\nFurry(Anne, True) ::: Anne is furry.\nChases(Anne, Bob, True) ::: Anne chases Bob.\n"
    "Big(Bob, False) ::: Bob is not big.\n"
    "Rules:\nFurry($x, True) && Chases($x, Bob, True) >>> Nice($x, True) ::: Furry chasers of Bob are nice.\n"
    "Nice($x, True) >>> Kind($x, True) ::: Nice people are kind.\n"
    "Query:\nKind(Anne, True) ::: Anne is kind.",
)

REFINE_TEMPLATE = (
    "You are provided with a logic program to solve the given problem. You can either repair and refine it, "
    "or simply return the original program. Reply with one ``` code block.\n\nThe question is:\n{question}\n\n"
    "The current logic program is:\n```\n{program}\n```\n\nThe solution program is:"
)

_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
LABELS = ("True", "False", "Unknown")


@dataclass
class LogicEnvironment:
    """Logic-LM programs answered by clingo inside the sandbox (open or closed world)."""

    closed_world: bool = False
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    progress: bool = False
    domain: str = "logic"

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        messages: Messages = []
        if few_shot:
            question, program = ONE_SHOT
            messages += [{"role": "user", "content": f"{INSTRUCTION}\n\n{question}"},
                         {"role": "assistant", "content": self.render_solution(program)}]
        messages.append({"role": "user", "content": f"{INSTRUCTION}\n\n{task.question}"})
        return messages

    def refine_prompt(self, task: Task, program: str) -> Messages:
        content = REFINE_TEMPLATE.format(question=task.question, program=program.strip() or "(no program)")
        return [{"role": "user", "content": content}]

    def extract_program(self, completion: str) -> str:
        match = _FENCE.search(completion)
        text = match.group(1) if match else completion
        start = text.find("Predicates:")
        if start >= 0:
            return text[start:].strip()
        return text.strip() if match else ""

    def render_solution(self, program: str) -> str:
        return f"```\n{program.strip()}\n```"

    def program_key(self, program: str) -> str:
        lines = (re.sub(r"\s+", " ", line.split(":::", 1)[0]).strip() for line in program.splitlines())
        return "\n".join(line for line in lines if line)

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        runnable = [i for i, program in enumerate(programs) if program.strip()]
        calls = [(f"PROGRAM = {programs[i]!r}", f"answer_or_error(PROGRAM, {self.closed_world})") for i in runnable]
        calls = [("from envisions_flow.logic_programs import answer_or_error\n" + code, entry)
                 for code, entry in calls]
        outcomes = dict(zip(runnable, run_many(calls, self.limits, self.workers, progress=self.progress,
                                               preload=DEFAULT_PRELOAD + ("clingo", "envisions_flow.logic_programs"))))
        results: list[Execution] = []
        for index, task in enumerate(tasks):
            outcome = outcomes.get(index)
            if outcome is None:
                results.append(Execution(0, None, NO_PROGRAM, 0.0))
            elif outcome.error_class:
                results.append(Execution(0, None, outcome.error_class, outcome.duration_s))
            elif outcome.value is None or outcome.value.startswith("error:"):
                error_class = (outcome.value or "error:solver_error").split(":")[1]
                results.append(Execution(0, None, error_class, outcome.duration_s))
            elif outcome.value == task.answer:
                results.append(Execution(1, outcome.value, CORRECT, outcome.duration_s))
            else:
                results.append(Execution(0, outcome.value, WRONG_ANSWER, outcome.duration_s))
        return results
