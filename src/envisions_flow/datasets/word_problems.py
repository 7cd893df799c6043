"""Seeded grade-school word problems whose answers are computed: the demo's data (`kind: generated`, math).
"""

from __future__ import annotations
import hashlib
import random
from typing import Any, Callable
import pandas as pd
from envisions_flow.datasets.loaders import DataError, split_of_spec


_NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
          "Maya", "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wen", "Yusuf"]


_ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards", "stamps", "eggs",
          "flowers", "coins", "toy cars", "beads", "oranges", "balloons"]


def _templates(r: random.Random, high: int, one_step: bool) -> list[Callable[[], tuple[str, int]]]:
    """Each template draws its numbers and returns (question, exact integer answer)."""
    name, other, item = r.choice(_NAMES), r.choice(_NAMES), r.choice(_ITEMS)
    a, b, c = r.randint(2, high), r.randint(2, high), r.randint(2, max(3, high // 4))

    def more():
        return f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", a + b

    def fewer():
        big = a + b
        return f"{name} had {big} {item} and gave {b} of them to {other}. How many {item} does {name} have left?", a

    def packs():
        return f"{name} buys {c} bags of {item}. Each bag holds {b} {item}. How many {item} does {name} buy?", c * b

    def share():
        total = b * c
        return (f"{name} shares {total} {item} equally among {c} friends. How many {item} does each friend get?", b)

    def shop():
        price, count = r.randint(2, max(3, high // 5)), c
        paid = price * count + a
        return (f"{name} buys {count} notebooks that cost ${price} each and pays with ${paid}. "
                f"How many dollars of change does {name} get?", paid - price * count)

    def two_step():
        return (f"{name} has {a} {item}. {name} buys {c} boxes with {b} {item} in each box. "
                f"How many {item} does {name} have in total?", a + b * c)

    def compare():
        return (f"{name} collected {a} {item}. {other} collected {c} times as many {item} as {name}. "
                f"How many {item} did they collect together?", a + a * c)

    def weekly():
        days = r.randint(2, 7)
        return (f"{name} reads {b} pages every day for {days} days and then {a} pages on the last day. "
                f"How many pages does {name} read in all?", b * days + a)

    one_step_templates = [more, fewer, packs, share]
    return one_step_templates if one_step else one_step_templates + [shop, two_step, compare, weekly]


def _split_of(question: str, test_fraction: float = 0.3) -> str:
    digest = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16)
    return "test" if digest / 0xFFFFFFFF < test_fraction else "train"


def generate_word_problems(spec: dict[str, Any], key: str) -> pd.DataFrame:
    """Seeded grade-school word problems whose answers are computed.

    `easy` problems take one step with numbers up to 20; `medium` (up to 100)
    and `hard` (up to 100,000, in the spirit of GSM-Hard) add two-step ones.
    Train and test are disjoint by construction: a problem's split is a hash of
    its text, and each split keeps only its own problems.
    """
    n = int(spec.get("n", 0))
    if n <= 0:
        raise DataError(f"{key}.n: a generated dataset needs n > 0")
    split = split_of_spec(spec, key, "generated")
    difficulty = spec.get("difficulty", "easy")
    high = {"easy": 20, "medium": 100, "hard": 100_000}.get(difficulty)
    if high is None:
        raise DataError(f"{key}.difficulty: must be easy, medium or hard")
    r = random.Random(int(spec.get("seed", 0)))
    name = spec.get("name", key.split(".")[-1])
    seen: set[str] = set()
    rows = []
    for _ in range(n * 1000):
        if len(rows) == n:
            break
        question, answer = r.choice(_templates(r, high, one_step=difficulty == "easy"))()
        if question in seen or _split_of(question) != split:
            continue
        seen.add(question)
        rows.append({"id": f"{name}-{len(rows)}", "question": question, "answer": str(answer), "source": name})
    if len(rows) < n:
        raise DataError(f"{key}.n: could only generate {len(rows)} distinct {split} problems")
    return pd.DataFrame(rows)
