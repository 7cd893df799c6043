"""config/schema.yaml and config/README.md document the same keys, and every key has a description.

The schema is what the workflow validates and fills defaults from; the README is what users read. Both are
written by hand (the README's tables say more than a one-line description can: why, trade-offs, measured
figures), so this test keeps them from drifting: every property key of the schema (through `properties`,
`additionalProperties`, `items`, `anyOf`/`oneOf` and resolved `$ref`s) has a `description`, every key the
README's tables name exists in the schema at that place, every schema key is in a README table, and a default
the README states is the schema's.

README tables of keys: a table whose first header cell is `key` (top level) or ``key in `SCOPE` `` (a dotted
path, `<name>` standing for any name, e.g. ``key in `domains.<domain>` ``); its first column names one key or
several, in backticks, dotted below the scope (`explore.k`), a name starting with a dot continuing the
previous one's parent (`mixture.lora.r`, `.alpha`); with a `default` column the cell starts with the default
(several keys: one value each, comma-separated, or one for all), before any parenthesised remark.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "config" / "schema.yaml"
README_PATH = ROOT / "config" / "README.md"

ANY_NAME = "*"  # a segment under additionalProperties or items: `<domain>` in the README
NO_DEFAULT = "—"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def resolve_ref(schema: dict, node: dict) -> tuple[str | None, dict]:
    """The $def a node refers to (its name, or None) and the node that defines it."""
    ref = node.get("$ref")
    if ref is None:
        return None, node
    prefix = "#/$defs/"
    assert ref.startswith(prefix), f"schema: only local $defs refs are supported, got {ref}"
    name = ref[len(prefix):]
    return name, schema["$defs"][name]


def branches(node: dict) -> list[dict]:
    """The node and its anyOf/oneOf alternatives: a key's children may live in any of them."""
    return [node] + [b for keyword in ("anyOf", "oneOf") for b in node.get(keyword, []) if isinstance(b, dict)]


@dataclass(frozen=True)
class Key:
    """A property key where it is defined: in the root or a $def, at a dotted path below it."""

    base: str  # "" for the root, else the $def's name
    path: tuple[str, ...]

    def __str__(self) -> str:
        where = f"$defs.{self.base}." if self.base else ""
        return where + ".".join("<name>" if part == ANY_NAME else part for part in self.path)


def children(schema: dict, base: str, path: tuple[str, ...], node: dict):
    """(segment, Key of the child, child node, child's own schema node before $ref) below one node."""
    for branch in branches(node):
        ref, branch = resolve_ref(schema, branch)
        # a $ref in an anyOf branch: its keys belong to the $def
        where, below = (ref, ()) if ref is not None else (base, path)
        for name, child in branch.get("properties", {}).items():
            yield name, Key(where, below + (name,)), child
        for keyword in ("additionalProperties", "items"):
            child = branch.get(keyword)
            if isinstance(child, dict):
                yield ANY_NAME, Key(where, below + (ANY_NAME,)), child


def schema_keys(schema: dict) -> dict[Key, dict]:
    """Every property key of the schema (each $def walked once), with its node as written."""
    found: dict[Key, dict] = {}
    walked: set[str] = set()

    def walk(base: str, path: tuple[str, ...], node: dict) -> None:
        ref, target = resolve_ref(schema, node)
        if ref is not None:
            if ref in walked:
                return
            walked.add(ref)
            base, path = ref, ()
        for _, key, child in children(schema, base, path, target):
            if key.path[-1] != ANY_NAME:
                found[key] = child
            walk(key.base, key.path, child)

    walk("", (), schema)
    return found


def description(schema: dict, node: dict) -> str | None:
    """A key's description: on the property itself, or on the $def it refers to."""
    return node.get("description") or resolve_ref(schema, node)[1].get("description")


def locate(schema: dict, dotted: list[str]) -> list[tuple[Key, dict]]:
    """The keys a dotted README path passes through, ending with the one it names; KeyError if absent."""
    base, path, node = "", (), schema
    passed = []
    for segment in dotted:
        wanted = ANY_NAME if segment.startswith("<") and segment.endswith(">") else segment
        for name, key, child in children(schema, base, path, node):
            if name == wanted:
                break
        else:
            raise KeyError(segment)
        ref, target = resolve_ref(schema, child)
        if wanted != ANY_NAME:
            passed.append((key, child))
        base, path = (ref, ()) if ref is not None else (key.base, key.path)
        node = target
    return passed


def locate_or_none(schema: dict, dotted: str) -> list[tuple[Key, dict]]:
    """As locate, empty for a key the schema lacks (test_readme_names_only_keys_of_the_schema reports those)."""
    try:
        return locate(schema, dotted.split("."))
    except KeyError:
        return []


# --- the README's tables ----------------------------------------------------------------------------------

SCOPE_HEADER = re.compile(r"^key(?: in `(?P<scope>[^`]+)`)?$")


def cells(line: str) -> list[str]:
    """A table row's cells; `\\|` inside a cell is text, not a separator."""
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [part.strip() for part in parts]


@dataclass(frozen=True)
class Row:
    line: int
    keys: tuple[str, ...]  # dotted, scope included
    default: str | None  # the default cell, where the table has one


def key_rows(text: str) -> list[Row]:
    """Every row of every key table of the README."""
    rows: list[Row] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        header = cells(line) if line.startswith("|") else []
        match = SCOPE_HEADER.match(header[0]) if header else None
        if not match:
            number += 1
            continue
        scope = match["scope"].split(".") if match["scope"] else []
        default_column = header.index("default") if "default" in header else None
        number += 2  # the header and the |---| line
        while number < len(lines) and lines[number].startswith("|"):
            row = cells(lines[number])
            names = re.findall(r"`([^`]+)`", row[0])
            assert names, f"config/README.md line {number + 1}: no key in backticks in {row[0]!r}"
            keys, parent = [], []
            for name in names:
                parts = name.split(".")
                if name.startswith("."):
                    parts = parent + parts[1:]
                parent = parts[:-1]
                keys.append(".".join(scope + parts))
            rows.append(Row(number + 1, tuple(keys), row[default_column] if default_column is not None else None))
            number += 1
    return rows


def split_top_level(text: str) -> list[str]:
    """`16, 32, [a, b]` -> ['16', '32', '[a, b]']: commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in parts + [current]]


def parse_value(text: str):
    """A README default as YAML would read it (`2e-5` a number, as written in the README)."""
    value = yaml.safe_load(text.replace("`", "").strip())
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def stated_defaults(row: Row) -> list:
    """The row's default per key: NO_DEFAULT, or the value the cell starts with."""
    cell = re.sub(r"\s*\(.*\)\s*$", "", row.default or "").strip()  # a trailing remark: `2 (`config.yaml`: logic 5, web 10)`
    if cell in ("", NO_DEFAULT):
        return [NO_DEFAULT] * len(row.keys)
    values = split_top_level(cell) if len(row.keys) > 1 else [cell]
    assert len(values) in (1, len(row.keys)), f"config/README.md line {row.line}: {len(values)} defaults for {row.keys}"
    return [parse_value(v) for v in values] * (len(row.keys) // len(values))


def same_value(stated, default) -> bool:
    """Equal as YAML values, a boolean never equal to a number (True == 1 in Python)."""
    if isinstance(stated, bool) or isinstance(default, bool):
        return stated is default
    return stated == default


# --- the tests --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema()


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return key_rows(README_PATH.read_text())


def test_every_schema_key_has_a_description(schema):
    keys = schema_keys(schema)
    assert len(keys) > 150  # the walk reached the $defs
    missing = sorted(str(key) for key, node in keys.items() if not description(schema, node))
    assert not missing, f"config/schema.yaml: keys without a description: {missing}"


def test_readme_names_only_keys_of_the_schema(schema, rows):
    unknown = []
    for row in rows:
        for dotted in row.keys:
            try:
                locate(schema, dotted.split("."))
            except KeyError as error:
                unknown.append(f"line {row.line}: {dotted} (no {error.args[0]!r} there)")
    assert not unknown, f"config/README.md documents keys config/schema.yaml does not have: {unknown}"


def test_readme_documents_every_schema_key(schema, rows):
    documented = {key for row in rows for dotted in row.keys for key, _ in locate_or_none(schema, dotted)}
    missing = sorted(str(key) for key in schema_keys(schema) if key not in documented)
    assert not missing, f"config/README.md has no table row for these keys of config/schema.yaml: {missing}"


def test_readme_defaults_are_the_schema_defaults(schema, rows):
    wrong = []
    for row in rows:
        if row.default is None:
            continue
        for dotted, stated in zip(row.keys, stated_defaults(row), strict=True):
            passed = locate_or_none(schema, dotted)
            if not passed or "default" not in passed[-1][1]:
                continue  # the code's default (the README says which): no schema default to compare
            default = passed[-1][1]["default"]
            if not same_value(stated, default):
                wrong.append(f"line {row.line}: {dotted} README {stated!r}, schema {default!r}")
    assert not wrong, f"config/README.md states defaults that are not config/schema.yaml's: {wrong}"


def test_readme_parser_reads_scopes_and_continued_names():
    """The conventions above, on a table written for the test (a parser that read nothing would pass the rest)."""
    text = "\n".join([
        "| key in `domains.<domain>` | default | meaning |",
        "|---|---|---|",
        "| `mixture.lora.r`, `.alpha` | 16, 32 | LoRA |",
        "| `iterations` | 10 (paper: 10) | how many |",
        "",
        "| method | what |",
        "|---|---|",
        "| `envisions` | not a key table |",
    ])
    parsed = key_rows(text)
    assert [row.keys for row in parsed] == [
        ("domains.<domain>.mixture.lora.r", "domains.<domain>.mixture.lora.alpha"), ("domains.<domain>.iterations",)]
    assert [stated_defaults(row) for row in parsed] == [[16, 32], [10]]
