"""A whole-program environment: questions about a small table, each answered by one SQL query run in SQLite.

The worked example of docs/environments.md. A task's question holds the table as the SQL that builds it
(the observation the policy reads) and the question itself; the policy writes one SELECT; the verdict
is b = 1 when the query returns exactly one value and that value is the answer. SQL is not Python, so
no process sandbox is needed: each program gets a fresh in-memory database whose authorizer allows
reading and nothing else (no ATTACH, no PRAGMA, no writes), under a deadline.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
import time
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
    Task,
    chat,
)

QUESTION_MARKER = "-- Question: "
INSTRUCTION = ("Answer the question with one SQLite SELECT query over the table below. Reply with one ```sql "
               "code block.")
SQL_ERROR = "sql_error"
TIMEOUT = "timeout"
NOT_ONE_VALUE = "not_one_value"  # several rows or columns: a container of candidates is no answer

ONE_SHOT = (
    "CREATE TABLE pets (name TEXT, species TEXT, age INTEGER);\n"
    "INSERT INTO pets VALUES ('Ava', 'cat', 3), ('Ben', 'dog', 5), ('Cleo', 'cat', 7);\n"
    f"{QUESTION_MARKER}How many cats are older than 4?",
    "SELECT COUNT(*) FROM pets WHERE species = 'cat' AND age > 4;",
)

REFINE_TEMPLATE = ("You are provided with an SQL query to answer the given question. You can either repair and "
                   "refine it, or simply return the original query. Reply with one ```sql code block.\n\n"
                   "The question is:\n{question}\n\nThe current query is:\n```sql\n{program}\n```\n\n"
                   "The solution query is:")

_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SELECT = re.compile(r"\bselect\b.*", re.IGNORECASE | re.DOTALL)
_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


@dataclass
class SqlEnvironment:
    """One SELECT per question, judged on the single value it returns."""

    timeout_s: float = 2.0
    domain: str = "sql"
    task_kinds = ("generated",)

    @classmethod
    def from_config(cls, domain: str, execution: Mapping[str, Any], options: Mapping[str, Any], dataset: Mapping[str, Any],
                    progress: bool) -> "SqlEnvironment":
        return cls(timeout_s=float(execution["timeout_s"]), **options)

    @staticmethod
    def load_tasks(spec: dict[str, Any], key: str) -> pd.DataFrame:
        return generate_pet_questions(spec, key)

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        examples = [(f"{INSTRUCTION}\n\n{ONE_SHOT[0]}", self.render_solution(ONE_SHOT[1]))] if few_shot else []
        return chat(examples, f"{INSTRUCTION}\n\n{task.question}")

    def refine_prompt(self, task: Task, program: str) -> Messages:
        return [{"role": "user", "content": REFINE_TEMPLATE.format(question=task.question,
                                                                   program=program.strip() or "-- (no query)")}]

    def extract_program(self, completion: str) -> str:
        fenced = _FENCE.search(completion)
        text = fenced.group(1) if fenced else completion
        query = _SELECT.search(text.split("```")[0])  # an unopened fence still closes the query
        return query.group(0).strip() if query else ""

    def render_solution(self, program: str) -> str:
        return f"```sql\n{program.strip()}\n```"

    def program_key(self, program: str) -> str:
        return " ".join(program.split()).rstrip(";").lower()

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        return [self._run(task, program) for task, program in zip(tasks, programs)]

    def _run(self, task: Task, program: str) -> Execution:
        if not program.strip():
            return Execution(0, None, NO_PROGRAM, 0.0)
        setup = task.question.split(QUESTION_MARKER)[0]
        started = time.monotonic()
        deadline = started + self.timeout_s
        connection = sqlite3.connect(":memory:")
        try:
            connection.executescript(setup)  # the task's own table: built before the program's rules apply
            connection.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _READ_ONLY
                                      else sqlite3.SQLITE_DENY)
            connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
            connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)  # no gigabyte strings or blobs
            rows = connection.execute(program.strip().rstrip(";")).fetchmany(2)
        except sqlite3.OperationalError as error:
            error_class = TIMEOUT if "interrupted" in str(error) else SQL_ERROR
            return Execution(0, None, error_class, time.monotonic() - started)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
            return Execution(0, None, SQL_ERROR, time.monotonic() - started)
        finally:
            connection.close()
        duration = time.monotonic() - started
        if len(rows) != 1 or len(rows[0]) != 1:
            return Execution(0, None, NOT_ONE_VALUE, duration)
        value = rows[0][0]
        rendered = None if value is None else str(value)
        return Execution(int(_same(value, task.answer)), rendered, CORRECT if _same(value, task.answer)
                         else WRONG_ANSWER, duration)


def _same(value: object, gold: str) -> bool:
    """A number within 1e-4 of the gold (absolute and relative), or the gold's exact text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            expected = float(gold)
        except ValueError:
            return False
        difference = abs(float(value) - expected)
        return math.isfinite(difference) and difference <= 1e-4 and difference <= 1e-4 * max(abs(expected), 1.0)
    return isinstance(value, str) and value == gold


# ---- generated tasks (`kind: generated`) -------------------------------------------------------------

_NAMES = ["Ava", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena"]
_SPECIES = ["cat", "dog", "rabbit"]


def _question(r: random.Random, pets: list[tuple[str, str, int]]) -> tuple[str, str]:
    """A question about the pets table and the query that answers it (the gold is that query's result)."""
    species, age = r.choice(sorted({kind for _, kind, _ in pets})), r.randint(2, 8)
    return r.choice([
        (f"How many {species}s are there?", f"SELECT COUNT(*) FROM pets WHERE species = '{species}'"),
        (f"How many pets are older than {age}?", f"SELECT COUNT(*) FROM pets WHERE age > {age}"),
        (f"What is the age of the oldest {species}?", f"SELECT MAX(age) FROM pets WHERE species = '{species}'"),
        (f"What is the total age of all {species}s?", f"SELECT SUM(age) FROM pets WHERE species = '{species}'"),
        ("What is the name of the youngest pet?", "SELECT name FROM pets ORDER BY age, name LIMIT 1"),
    ])


def generate_pet_questions(spec: dict[str, Any], key: str) -> pd.DataFrame:
    """`n` tasks, each a fresh table of 4-7 pets and a question whose gold is computed by SQLite itself."""
    n = int(spec.get("n", 0))
    if n <= 0:
        raise DataError(f"{key}.n: generated SQL tasks need n > 0")
    split = spec.get("split", "train")
    if split not in {"train", "test"}:
        raise DataError(f"{key}.split: generated SQL tasks have splits train and test (got {split!r})")
    r = random.Random(f"{spec.get('seed', 0)}:{split}")
    name = spec.get("name", key.split(".")[-1])
    rows = []
    for index in range(n):
        pets = [(pet, r.choice(_SPECIES), r.randint(1, 12)) for pet in r.sample(_NAMES, r.randint(4, 7))]
        values = ", ".join(f"('{pet}', '{species}', {age})" for pet, species, age in pets)
        setup = f"CREATE TABLE pets (name TEXT, species TEXT, age INTEGER);\nINSERT INTO pets VALUES {values};\n"
        text, query = _question(r, pets)
        with sqlite3.connect(":memory:") as connection:
            connection.executescript(setup)
            (answer,) = connection.execute(query).fetchone()
        rows.append({"id": f"{name}-{index}", "question": f"{setup}{QUESTION_MARKER}{text}",
                     "answer": str(answer), "source": name})
    return pd.DataFrame(rows)
