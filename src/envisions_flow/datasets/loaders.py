"""Task data: public datasets by hub id, local files with a field mapping, or generated problems.

Every source is normalised to rows (id, question, answer, source). Problems are
reported with the config key and the file or field at fault, before any model
work starts. Data sets load in their published forms: a row whose answer the domain's
judge cannot hold (its environment's `holds_answer`: for the math judge, an ASDiv answer
that is a name, "Yes", two values or a clock time) is skipped and counted in the log, never
reduced to its first number.
"""

from __future__ import annotations
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable
import numpy as np
import pandas as pd
from envisions_flow.environments import math_answers as answers

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset is missing, malformed or empty."""


# Public datasets as the papers used them; any key can be overridden in the config.
PRESETS: dict[str, dict[str, Any]] = {
    "gsm8k": {"kind": "hub", "id": "openai/gsm8k", "subset": "main", "split": "test",
              "fields": {"question": "question", "answer": "answer"}, "answer_format": "gsm8k"},
    "math": {"kind": "hub", "id": "HuggingFaceH4/MATH-500", "split": "test",
             "fields": {"question": "problem", "answer": "answer", "id": "unique_id"},
             "answer_format": "raw", "answer_type": answers.SYMBOLIC},
    # the whole MATH (7,500 train, 5,000 test problems), for training on it as the paper did
    "math_full": {"kind": "hub", "id": "DigitalLearningGmbH/MATH-lighteval", "split": "train",
                  "fields": {"question": "problem", "answer": "solution"}, "answer_format": "boxed",
                  "answer_type": answers.SYMBOLIC},
    "gsm_hard": {"kind": "hub", "id": "reasoning-machines/gsm-hard", "split": "train",
                 "fields": {"question": "input", "answer": "target"}, "answer_format": "raw"},
    "svamp": {"kind": "hub", "id": "ChilleD/SVAMP", "split": "test",
              "fields": {"question": "{Body} {Question}", "answer": "Answer", "id": "ID"}, "answer_format": "raw"},
    "asdiv": {"kind": "hub", "id": "EleutherAI/asdiv", "split": "validation",
              "fields": {"question": "{body} {question}", "answer": "answer"}, "answer_format": "number"},
    "asdiv_xml": {"kind": "file", "xpath": ".//Problem",  # ASDiv.xml as its authors published it
                  "fields": {"id": "ID", "question": "{Body} {Question}", "answer": "Answer"}, "answer_format": "number"},
    "proofwriter": {"kind": "hub", "id": "tasksource/proofwriter", "split": "test",
                    "fields": {"id": "id", "question": "{theory}\n{question}", "answer": "answer"},
                    "answer_format": "label", "closed_world": False},
    "proofwriter_logiclm": {"kind": "file",
                            "fields": {"id": "id", "question": "{context}\n{question}", "answer": "answer"},
                            "answer_format": "label", "closed_world": False},
    "ruletaker": {"kind": "hub", "id": "hitachi-nlp/ruletaker", "split": "test",
                  "fields": {"question": "{context}\n{question}", "answer": "label"},
                  "answer_format": "label", "closed_world": True},
    "ruletaker_jsonl": {"kind": "file", "explode": "questions",
                  "fields": {"id": "questions.id", "question": "{context}\n{questions.text}",
                             "answer": "questions.label"},
                  "answer_format": "label", "closed_world": True},
    "miniwob": {"kind": "miniwob"},
}


# What a data set made of parts keeps of its own keys: how its answers are judged and reported.
PARTS_KEYS = ("parts", "name", "answer_type", "closed_world", "held_in", "limit")


def with_preset(spec: dict[str, Any]) -> dict[str, Any]:
    """A dataset spec with its preset's defaults filled in.

    A spec with `parts` is made of its parts alone: keys a merged base config left beside them (its
    `kind`, `n`, ...) are dropped.
    """
    if spec.get("parts"):
        return {key: value for key, value in spec.items() if key in PARTS_KEYS}
    preset = spec.get("preset")
    if preset is None:
        return dict(spec)
    if preset not in PRESETS:
        raise DataError(f"preset: unknown dataset preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    merged = {**PRESETS[preset], **spec}
    merged["fields"] = {**PRESETS[preset].get("fields", {}), **spec.get("fields", {})}
    return merged


# Logic-LM's options "A) True / B) False / C) Unknown", booleans and label words, all to one spelling.
_LABELS = {"a": "True", "b": "False", "c": "Unknown", "true": "True", "false": "False", "unknown": "Unknown",
           "1": "True", "0": "False"}


def _gold(value: Any, answer_format: str) -> str:
    text = str(value).strip()
    if answer_format == "gsm8k":
        text = text.split("####")[-1].strip().replace(",", "")
    elif answer_format == "boxed":
        text = answers.unbox(text).strip()
    elif answer_format == "label":
        text = _LABELS.get(text.lower(), text)
    elif answer_format == "number":  # "9 (apples)" -> "9", "-(1/3)" -> "-1/3"; "" when not one number
        text = answers.number_token(text) or ""
    return text


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _field_getter(template: str) -> tuple[Callable[[dict], str], list[str]]:
    """A field mapping is a column name or a format string such as '{Body} {Question}'."""
    names = _PLACEHOLDER.findall(template)
    if not names:
        return (lambda row: row[template]), [template]
    return (lambda row: _format(template, row)), names


def _read_file(path: Path, key: str, xpath: str = ".//Problem") -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{key}.path: file not found: {path}")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix == ".xml":
            return pd.read_xml(path, xpath=xpath, parser="etree", dtype=str)
        if suffix in {".jsonl", ".jsonl.gz"}:
            return pd.read_json(path, lines=True, dtype=False, precise_float=True)
        if suffix == ".json":
            return pd.read_json(path, dtype=False, precise_float=True)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in {".csv", ".csv.gz"}:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, OSError, SyntaxError) as error:  # SyntaxError: malformed XML
        raise DataError(f"{key}.path: cannot read {path}: {error}") from None
    raise DataError(f"{key}.path: {path} must end in .jsonl, .json, .parquet, .csv or .xml")


def _read_hub(spec: dict[str, Any], key: str) -> pd.DataFrame:
    from datasets import load_dataset

    try:
        dataset = load_dataset(spec["id"], spec.get("subset"), split=spec.get("split", "test"))
    except Exception as error:  # noqa: BLE001 - offline, missing id, bad split: all the user's to fix
        raise DataError(f"{key}.id: cannot load {spec['id']!r} from the hub ({type(error).__name__}: {error}); "
                        "download it once and point `kind: file` at the local copy") from None
    return dataset.to_pandas()


def explode(frame: pd.DataFrame, column: str, key: str, origin: str) -> pd.DataFrame:
    """One row per item of a nested column (list of dicts, or dict of dicts), its keys as `column.key`.

    ProofWriter's and RuleTaker's original jsonl hold one theory per line with its
    questions nested inside; this flattens them to one question per row.
    """
    if column not in frame.columns:
        raise DataError(f"{key}.explode: {origin} has no column {column!r}; columns are {list(frame.columns)}")
    rows = []
    for record in frame.to_dict("records"):
        items = record.pop(column)
        items = list(items.values()) if isinstance(items, dict) else list(items if items is not None else [])
        for item in items:
            if not isinstance(item, dict):
                raise DataError(f"{key}.explode: items of {column!r} in {origin} must be objects")
            rows.append({**record, **{f"{column}.{name}": value for name, value in item.items()}})
    return pd.DataFrame(rows)


_SENTENCE_END = (".", "?", "!", ":", ";", '"', "'", "\u201d")


def _format(template: str, row: dict) -> str:
    """str.format over columns whose names may hold dots (`{questions.text}`).

    Two fields joined by a space are two sentences: a first one without a final stop gets one
    (SVAMP's Body "... a discount of 25 dollars on each pack" before its Question).
    """

    def field(match: re.Match) -> str:
        value = str(row[match.group(1)])
        if template.startswith(" {", match.end()) and value.strip() and not value.rstrip().endswith(_SENTENCE_END):
            return value.rstrip() + "."
        return value

    return _PLACEHOLDER.sub(field, template)


def _check_scalars(column: list[Any], key: str, origin: str) -> None:
    """Text or numbers only: a missing value (null, NaN) or a list/object would otherwise become the
    text 'nan' or "['a', 'b']" and reach the prompts."""
    missing = [i for i, value in enumerate(column) if value is None or (isinstance(value, float) and math.isnan(value))]
    if missing:
        raise DataError(f"{key}: {origin} has missing values (null) at rows {missing[:5]}")
    wrong = [(i, type(value).__name__) for i, value in enumerate(column)
             if not isinstance(value, (str, int, float, bool, np.integer, np.floating))]
    if wrong:
        raise DataError(f"{key}: {origin} must hold text or numbers; rows {[i for i, _ in wrong[:5]]} hold "
                        f"{sorted({kind for _, kind in wrong})}")


def normalise(frame: pd.DataFrame, spec: dict[str, Any], key: str, origin: str,
              environment: type | None = None) -> pd.DataFrame:
    """Map a raw table to (id, question, answer, source) and check it; rows the judge cannot answer are skipped."""
    if spec.get("explode"):
        frame = explode(frame, spec["explode"], key, origin)
    fields = spec.get("fields", {"question": "question", "answer": "answer"})
    getters = {}
    for target in ("question", "answer"):
        if target not in fields:
            raise DataError(f"{key}.fields: no mapping for {target!r}")
        getter, needed = _field_getter(fields[target])
        missing = [name for name in needed if name not in frame.columns]
        if missing:
            raise DataError(f"{key}.fields.{target}: {origin} has no column(s) {missing}; "
                            f"columns are {list(frame.columns)}")
        getters[target] = getter
    if "id" in fields and fields["id"] not in frame.columns:
        raise DataError(f"{key}.fields.id: {origin} has no column {fields['id']!r}")
    rows = frame.to_dict("records")
    if not rows:
        raise DataError(f"{key}: {origin} has no rows (empty split)")
    name = spec.get("name", key.split(".")[-1])
    values = {target: [getters[target](row) for row in rows] for target in ("question", "answer")}
    if "id" in fields:
        values["id"] = [row[fields["id"]] for row in rows]
    for target, column in values.items():
        _check_scalars(column, f"{key}.fields.{target}", origin)
    out = pd.DataFrame(
        {
            "id": [str(value) for value in values["id"]] if "id" in fields else [f"{name}-{i}" for i in range(len(rows))],
            "question": [str(value).strip() for value in values["question"]],
            "answer": [_gold(value, spec.get("answer_format", "raw")) for value in values["answer"]],
            "source": name,
        }
    )
    if (out["question"] == "").any():
        raise DataError(f"{key}: {origin} has empty questions at rows {out.index[out['question'] == ''].tolist()[:5]}")
    duplicated = out["id"][out["id"].duplicated()].unique().tolist()
    if duplicated:
        raise DataError(f"{key}.fields.id: {origin} has duplicate ids {duplicated[:5]}")
    held, judged_as = _answers_held(out["answer"], spec, environment)
    if not held.all():
        skipped = [int(i) for i in out.index[~held]]
        examples = ", ".join(f"row {i}: {values['answer'][i]!r}" for i in skipped[:5])
        if not held.any():
            raise DataError(f"{key}.fields.answer: no row of {origin} has {judged_as} as its answer ({examples}, ...)")
        log.warning("%s: skipped %d of %d rows of %s whose answer is not %s (%s%s)", key, len(skipped), len(out),
                    origin, judged_as, examples, ", ..." if len(skipped) > 5 else "")
        out = out[held].reset_index(drop=True)
    if spec.get("limit"):
        out = out.head(int(spec["limit"]))
    return out


def part_specs(spec: dict[str, Any], key: str) -> list[tuple[dict[str, Any], str]]:
    """(spec, config key) of each part of a data set made of several (`parts`), each named after its preset."""
    named = []
    for index, part in enumerate(spec["parts"]):
        name = part.get("name") or part.get("preset") or f"part{index}"
        named.append(({**part, "name": name}, f"{key}.parts.{index}"))
    if len({part["name"] for part, _ in named}) < len(named):
        raise DataError(f"{key}.parts: two parts share a name; give each a `name` (their ids start with it)")
    return named


def _answers_held(golds: pd.Series, spec: dict[str, Any], environment: type | None) -> tuple[pd.Series, str]:
    """Which gold answers the domain's judge can credit (its environment's `holds_answer`), and what those are."""
    holds = getattr(environment, "holds_answer", None)
    if holds is None:
        return golds.str.strip() != "", "a non-empty text"
    accepts, judged_as = holds(spec)
    return golds.map(accepts).astype(bool), judged_as


def load_tasks(spec: dict[str, Any], key: str, environment: type | None = None) -> pd.DataFrame:
    """Rows (id, question, answer, source) for one configured dataset (`parts`: the rows of each, in order).

    File and hub data load the same way in every domain; any other kind (`generated`, `miniwob`) is data
    the domain's environment class makes itself (its `load_tasks`), so a new environment brings its own.
    """
    if spec.get("parts"):
        rows = pd.concat([load_tasks(part, part_key, environment) for part, part_key in part_specs(spec, key)],
                         ignore_index=True)
        duplicated = rows["id"][rows["id"].duplicated()].unique().tolist()
        if duplicated:
            raise DataError(f"{key}.parts: the parts share ids {duplicated[:5]}")
        return rows
    spec = with_preset(spec)
    kind = spec.get("kind")
    if kind == "file":
        path = Path(spec.get("path", ""))
        return normalise(_read_file(path, key, spec.get("xpath", ".//Problem")), spec, key, str(path), environment)
    if kind == "hub":
        return normalise(_read_hub(spec, key), spec, key, spec["id"], environment)
    _check_environment_kind(spec, key, environment)
    return environment.load_tasks(spec, key)  # type: ignore[union-attr]


def check_source(spec: dict[str, Any], key: str, environment: type | None = None, role: str = "test") -> None:
    """Start-up check of a dataset spec: its file exists and is readable, and every row has the mapped fields, text
    or numbers in them, and at least one row an answer the judge can hold (a file is read whole: a bad row 2,000
    would otherwise stop a job minutes later); data an environment makes is checked by the environment
    (`check_tasks`), knowing its `role` (train or test)."""
    if spec.get("parts"):
        for part, part_key in part_specs(spec, key):
            check_source(part, part_key, environment, role)
        return
    spec = with_preset(spec)
    kind = spec.get("kind")
    if spec.get("fresh_seeds") and kind not in getattr(environment, "fresh_seeds_kinds", ()):
        raise DataError(f"{key}.fresh_seeds: {kind} data is fixed; only data an environment draws anew each "
                        "iteration (the web's miniwob episodes) takes fresh_seeds")
    if kind in GENERIC_KINDS:
        if kind == "file":
            path = Path(spec.get("path", ""))
            normalise(_read_file(path, key, spec.get("xpath", ".//Problem")), spec, key, str(path), environment)
        return
    _check_environment_kind(spec, key, environment)
    check = getattr(environment, "check_tasks", None)
    if check is not None:
        check(spec, key, role)


GENERIC_KINDS = ("file", "hub")


def _check_environment_kind(spec: dict[str, Any], key: str, environment: type | None) -> None:
    kinds = tuple(getattr(environment, "task_kinds", ()))
    if spec.get("kind") not in kinds:
        raise DataError(f"{key}.kind: must be one of {', '.join(GENERIC_KINDS + kinds)} for this domain's "
                        f"environment (got {spec.get('kind')!r})")


def split_of_spec(spec: dict[str, Any], key: str, kind: str) -> str:
    """The split of data the project makes itself: train and test are disjoint by construction."""
    split = spec.get("split", "train")
    if split not in {"train", "test"}:
        raise DataError(f"{key}.split: {kind} data has splits train and test (got {split!r})")
    return split
