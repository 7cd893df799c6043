"""Logical reasoning (ProofWriter, RuleTaker) solved by Logic-LM programs run by clingo."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from envisions_flow.environments.base import (
    CORRECT,
    NO_PROGRAM,
    WRONG_ANSWER,
    Execution,
    Messages,
    Task,
    chat,
    extract_fenced,
)
from envisions_flow.environments.logic_programs import FALSE, TRUE, UNKNOWN
from envisions_flow.environments.registry import sandboxed_options
from envisions_flow.environments.sandbox import Confinement, Limits, SandboxPool

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

# What a logic worker imports before forking, and the function its children call on each program.
_PRELOAD = ("clingo", "envisions_flow.environments.logic_programs")
_ANSWER = "envisions_flow.environments.logic_programs:answer_or_error"
_IMPORT_ANSWER = "from envisions_flow.environments.logic_programs import answer_or_error"


@dataclass
class LogicEnvironment:
    """Logic-LM programs answered by clingo inside the sandbox (open or closed world)."""

    closed_world: bool = False
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    progress: bool = False
    chunk_size: int = 64
    confinement: Confinement = field(default_factory=Confinement)
    domain: str = "logic"
    task_kinds = ("generated",)  # data it makes itself, beside file and hub data
    uses_sandbox = True  # its programs run in the kernel-confined sandbox (execution.sandbox)

    @classmethod
    def from_config(cls, domain: str, execution: Mapping[str, Any], options: Mapping[str, Any], dataset: Mapping[str, Any],
                    progress: bool) -> "LogicEnvironment":
        return cls(closed_world=bool(dataset.get("closed_world", False)), **sandboxed_options(domain, execution, progress),
                   **options)

    @staticmethod
    def holds_answer(spec: Mapping[str, Any]) -> tuple[Callable[[str], bool], str]:
        """Which gold labels the judge can credit: True and False, and Unknown in the open world."""
        labels = {TRUE, FALSE} if spec.get("closed_world") else {TRUE, FALSE, UNKNOWN}
        return labels.__contains__, f"one of the labels {sorted(labels)}"

    @staticmethod
    def load_tasks(spec: dict[str, Any], key: str) -> pd.DataFrame:
        """`kind: generated`: seeded ProofWriter-style theories labelled by the generator's own reasoning."""
        from envisions_flow.datasets.theories import generate_theories

        return generate_theories(spec, key)

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        examples = [(f"{INSTRUCTION}\n\n{ONE_SHOT[0]}", self.render_solution(ONE_SHOT[1]))] if few_shot else []
        return chat(examples, f"{INSTRUCTION}\n\n{task.question}")

    def refine_prompt(self, task: Task, program: str) -> Messages:
        content = REFINE_TEMPLATE.format(question=task.question, program=program.strip() or "(no program)")
        return [{"role": "user", "content": content}]

    def extract_program(self, completion: str) -> str:
        return extract_fenced(completion, "Predicates:")

    def render_solution(self, program: str) -> str:
        return f"```\n{program.strip()}\n```"

    def program_key(self, program: str) -> str:
        lines = (re.sub(r"\s+", " ", line.split(":::", 1)[0]).strip() for line in program.splitlines())
        return "\n".join(line for line in lines if line)

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        labels = self._run(list(programs))
        results: list[Execution] = []
        for task, program, (value, error_class, duration) in zip(tasks, programs, labels):
            if not program.strip():
                results.append(Execution(0, None, NO_PROGRAM, 0.0))
            elif error_class:
                results.append(Execution(0, None, error_class, duration))
            elif value == task.answer:
                results.append(Execution(1, value, CORRECT, duration))
            else:
                results.append(Execution(0, value, WRONG_ANSWER, duration))
        return results

    def _run(self, programs: list[str]) -> list[tuple[str | None, str, float]]:
        """(label, error class, seconds) per program.

        A program is data that our own parser and clingo read, not code to run, so one confined child
        (the math sandbox's kernel layers and audit hook) answers a whole chunk: a fork per chunk, not
        per program. A chunk that overruns its time budget or ends without its answers is answered
        again one program at a time, each in its own child, whose per-program timeout isolates the culprit.
        """
        from tqdm import tqdm

        chunks = [list(range(i, min(i + self.chunk_size, len(programs))))
                  for i in range(0, len(programs), self.chunk_size)]
        chunk_limits = replace(self.limits, timeout_s=self.limits.timeout_s + 2 + 0.05 * self.chunk_size)
        results: dict[int, tuple[str | None, str, float]] = {}
        retry: list[int] = []
        with SandboxPool(self.workers, self.limits, preload=_PRELOAD, confinement=self.confinement) as pool:
            arguments = [[[programs[i], self.closed_world] for i in chunk] for chunk in chunks]
            with tqdm(total=len(programs), desc="executing", unit="prog", disable=not self.progress) as bar:
                for chunk, (answered, _) in zip(chunks, pool.call(_ANSWER, arguments, chunk_limits)):
                    if answered is None:  # a timeout, MemoryError, refusal or crash somewhere in the chunk
                        retry.extend(chunk)
                    else:
                        results.update((index, _parse_label(label, seconds))
                                       for index, (label, seconds) in zip(chunk, answered))
                    bar.update(len(chunk))
            calls = [(f"{_IMPORT_ANSWER}\nPROGRAM = {programs[i]!r}", f"answer_or_error(PROGRAM, {self.closed_world})")
                     for i in retry]
            for index, outcome in zip(retry, pool.map(calls, progress=self.progress)):
                results[index] = _parse_label(outcome.value, outcome.duration_s) if not outcome.error_class else (
                    None, outcome.error_class, outcome.duration_s)
        return [results[i] for i in range(len(programs))]


def _parse_label(value: str | None, duration: float) -> tuple[str | None, str, float]:
    if value is None or value.startswith("error:"):
        return None, (value or "error:solver_error").split(":")[1], duration
    return value, "", duration
