"""Seeded ProofWriter-style theories: facts, rules with chains up to depth 5, negations.

Gold labels come from this module's own forward chaining over the theory it
built, never from the executor that judges the policy's programs, so the two
check each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

ENTITIES = ["Anne", "Bob", "Charlie", "Dave", "Erin", "Fiona", "Gary", "Harry"]
ATTRIBUTES = ["big", "blue", "cold", "furry", "green", "kind", "nice", "quiet", "red", "rough", "round", "smart",
              "white", "young"]
RELATIONS = ["chases", "likes", "sees", "visits"]

Fact = tuple[str, tuple[str, ...], bool]  # (predicate, arguments, value)


@dataclass(frozen=True)
class TheoryRule:
    """If someone has all `premises` (attribute, value) [and relates to `target`], they get `conclusion`."""

    premises: tuple[tuple[str, bool], ...]
    conclusion: tuple[str, bool]
    relation: tuple[str, str] | None = None  # (relation, constant object) as an extra premise

    def sentence(self) -> str:
        parts = [f"{'' if value else 'not '}{attribute}" for attribute, value in self.premises]
        text = f"If someone is {parts[0]}" + "".join(f" and they are {part}" for part in parts[1:])
        if self.relation:
            text += f" and they {self.relation[0].removesuffix('s')} {self.relation[1]}"
        attribute, value = self.conclusion
        return f"{text} then they are {'' if value else 'not '}{attribute}."


def _fact_sentence(fact: Fact) -> str:
    predicate, args, value = fact
    if len(args) == 1:
        return f"{args[0]} is {'' if value else 'not '}{predicate}."
    return f"{args[0]} {'' if value else 'does not '}{predicate if value else predicate.removesuffix('s')} {args[1]}."


def forward_chain(facts: set[Fact], rules: list[TheoryRule], entities: list[str]) -> dict[Fact, int]:
    """Every derivable fact with the depth of its shortest derivation (0 = stated)."""
    known = {fact: 0 for fact in facts}
    depth = 0
    while True:
        depth += 1
        new = {}
        for rule in rules:
            for entity in entities:
                if all((attribute, (entity,), value) in known for attribute, value in rule.premises) and (
                    rule.relation is None or (rule.relation[0], (entity, rule.relation[1]), True) in known
                ):
                    conclusion = (rule.conclusion[0], (entity,), rule.conclusion[1])
                    if conclusion not in known and conclusion not in new:
                        new[conclusion] = depth
        if not new:
            return known
        known.update(new)


def label(statement: Fact, known: dict[Fact, int], closed_world: bool) -> str:
    predicate, args, value = statement
    if closed_world:
        holds = (predicate, args, True) in known
        return "True" if holds == value else "False"
    if statement in known:
        return "True"
    if (predicate, args, not value) in known:
        return "False"
    return "Unknown"


def _theory(r: random.Random, max_depth: int, closed_world: bool = False) -> tuple[list[str], set[Fact], list[TheoryRule]]:
    """A random theory; closed-world ones (as RuleTaker's) state only positive facts and premises."""
    negation = 0.0 if closed_world else 1.0
    entities = r.sample(ENTITIES, r.randint(2, 4))
    attributes = r.sample(ATTRIBUTES, r.randint(5, 8))
    relation = r.choice(RELATIONS)
    facts: set[Fact] = set()
    for entity in entities:
        for attribute in r.sample(attributes, r.randint(1, 3)):
            facts.add((attribute, (entity,), r.random() < 1 - 0.2 * negation))
    for _ in range(r.randint(0, 2)):
        subject, obj = r.sample(entities, 2)
        facts.add((relation, (subject, obj), True))
    rules = []
    # A chain a0 -> a1 -> ... -> a_depth guarantees derivations of the requested depth exist.
    chain = r.sample(attributes, min(len(attributes), max_depth + 1))
    for first, second in zip(chain, chain[1:]):
        rules.append(TheoryRule(((first, True),), (second, r.random() < 0.85)))
    facts.add((chain[0], (r.choice(entities),), True))
    for _ in range(r.randint(1, 3)):
        chosen = r.sample(attributes, r.randint(2, 3))
        premises = tuple((attribute, r.random() < 1 - 0.15 * negation) for attribute in chosen[1:])
        conclusion = (chosen[0], r.random() < 0.8)
        extra = (relation, r.choice(entities)) if r.random() < 0.3 else None
        rules.append(TheoryRule(premises, conclusion, extra))
    r.shuffle(rules)
    return entities, facts, rules


def generate_theories(spec: dict[str, Any], key: str) -> pd.DataFrame:
    """n questions (id, question, answer, source) over freshly drawn theories, labels balanced."""
    from envisions_flow.datasets.loaders import DataError

    n = int(spec.get("n", 0))
    if n <= 0:
        raise DataError(f"{key}.n: a generated dataset needs n > 0")
    closed_world = bool(spec.get("closed_world", False))
    max_depth = int(spec.get("max_depth", 5))
    split = spec.get("split", "train")
    r = random.Random(f"{spec.get('seed', 0)}-{split}")
    labels = ["True", "False"] if closed_world else ["True", "False", "Unknown"]
    name = spec.get("name", key.split(".")[-1])
    rows: list[dict[str, str]] = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n:
            raise DataError(f"{key}: could not draw {n} balanced questions")
        entities, facts, rules = _theory(r, max_depth, closed_world)
        known = forward_chain(facts, rules, entities)
        if any((predicate, args, not value) in known for predicate, args, value in known):
            continue  # ProofWriter's theories are consistent: draw again
        wanted = labels[len(rows) % len(labels)]
        candidates = [(attribute, (entity,), value) for entity in entities for attribute in ATTRIBUTES
                      for value in (True, False)]
        r.shuffle(candidates)
        for statement in candidates:
            stated = statement in facts or (statement[0], statement[1], not statement[2]) in facts
            if label(statement, known, closed_world) == wanted and known.get(statement, 0) <= max_depth and not (
                    wanted != "Unknown" and stated and r.random() < 0.7):
                context = " ".join([_fact_sentence(fact) for fact in sorted(facts)] + [rule.sentence() for rule in rules])
                question = (f"Theory: {context}\nStatement: {_fact_sentence(statement)}\n"
                            "Is the statement True, False or Unknown?")
                rows.append({"id": f"{name}-{len(rows)}", "question": question, "answer": wanted, "source": name})
                break
    return pd.DataFrame(rows)


def theory_program(facts: set[Fact], rules: list[TheoryRule], statement: Fact) -> str:
    """The Logic-LM program of a theory and a statement: a gold solution, for tests and benchmarks."""

    def atom(predicate: str, args: tuple[str, ...], value: bool) -> str:
        return f"{predicate.capitalize()}({', '.join(args)}, {value})"

    mentioned = {fact[0] for fact in facts} | {a for rule in rules for a, _ in rule.premises} | {
        rule.conclusion[0] for rule in rules}
    lines = ["Predicates:"]
    if statement[0] not in mentioned:
        lines.append(f"{statement[0].capitalize()}($x, bool) ::: declared, never stated")
    lines += ["Facts:"] + [atom(*fact) for fact in sorted(facts)] + ["Rules:"]
    for rule in rules:
        premises = [atom(attribute, ("$x",), value) for attribute, value in rule.premises]
        if rule.relation:
            premises.append(atom(rule.relation[0], ("$x", rule.relation[1]), True))
        lines.append(" && ".join(premises) + " >>> " + atom(rule.conclusion[0], ("$x",), rule.conclusion[1]))
    return "\n".join(lines + ["Query:", atom(*statement)])
