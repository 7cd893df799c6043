"""Task data: public datasets by hub id, local files with a field mapping, or generated problems.

Every source is normalised to rows (id, question, answer, source). Problems are
reported with the config key and the file or field at fault, before any model
work starts. Data sets load in their published forms: a row whose answer the judge
cannot hold (an ASDiv answer that is a name, "Yes", two values or a clock time, for a
numeric judge) is skipped and counted in the log, never reduced to its first number.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
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

# The 44 MiniWob++ tasks of the ENVISIONS paper (Table 11): the default task list of `kind: miniwob`.
MINIWOB_TASKS = [
    "choose-date", "choose-list", "click-button", "click-button-sequence", "click-checkboxes",
    "click-checkboxes-large", "click-checkboxes-soft", "click-checkboxes-transfer", "click-collapsible",
    "click-color", "click-dialog", "click-dialog-2", "click-link", "click-option", "click-scroll-list",
    "click-shades", "click-shape", "click-tab", "click-test", "click-test-2", "click-widget", "copy-paste",
    "copy-paste-2", "enter-date", "enter-password", "enter-text", "enter-text-dynamic", "enter-time",
    "focus-text", "focus-text-2", "guess-number", "identify-shape", "multi-layouts", "multi-orderings",
    "navigate-tree", "read-table", "search-engine", "simple-algebra", "simple-arithmetic", "social-media-all",
    "text-transform", "unicode-test", "use-slider", "use-spinner",
]


def with_preset(spec: dict[str, Any]) -> dict[str, Any]:
    """A dataset spec with its preset's defaults filled in."""
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


_SENTENCE_END = (".", "?", "!", ":", ";", '"', "'", "”")


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


def normalise(frame: pd.DataFrame, spec: dict[str, Any], key: str, origin: str, domain: str = "math") -> pd.DataFrame:
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
    held, judged_as = _answers_held(out["answer"], spec, domain)
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


def _answers_held(golds: pd.Series, spec: dict[str, Any], domain: str) -> tuple[pd.Series, str]:
    """Which gold answers the domain's judge can credit, and what it credits (for messages)."""
    if domain == "logic":
        labels = {"True", "False"} if spec.get("closed_world") else {"True", "False", "Unknown"}
        return golds.isin(labels), f"one of the labels {sorted(labels)}"
    if domain == "math" and spec.get("answer_type", answers.NUMERIC) == answers.NUMERIC:
        number = golds.map(answers.parse_number)
        return number.map(lambda value: value is not None and math.isfinite(value)).astype(bool), "one number"
    return golds.str.strip() != "", "a non-empty text"


def load_tasks(spec: dict[str, Any], key: str, domain: str = "math") -> pd.DataFrame:
    """Rows (id, question, answer, source) for one configured dataset."""
    spec = with_preset(spec)
    kind = spec.get("kind")
    if kind == "generated":
        if domain == "logic":
            from envisions_flow.datasets.theories import generate_theories

            return generate_theories(spec, key)
        return generate_word_problems(spec, key)
    if kind == "miniwob":
        return miniwob_tasks(spec, key)
    if kind == "file":
        path = Path(spec.get("path", ""))
        return normalise(_read_file(path, key, spec.get("xpath", ".//Problem")), spec, key, str(path), domain)
    if kind == "hub":
        return normalise(_read_hub(spec, key), spec, key, spec["id"], domain)
    raise DataError(f"{key}.kind: must be one of generated, file, hub, miniwob (got {kind!r})")


def check_source(spec: dict[str, Any], key: str, domain: str = "math") -> None:
    """Start-up check of a dataset spec: its file exists and is readable, and every row has the mapped fields,
    text or numbers in them, and at least one row an answer the judge can hold (a file is read whole: a bad
    row 2,000 would otherwise stop a job minutes later)."""
    spec = with_preset(spec)
    if spec.get("fresh_seeds") and spec.get("kind") != "miniwob":
        raise DataError(f"{key}.fresh_seeds: only miniwob data draws fresh episodes per iteration")
    if spec.get("kind") == "file":
        path = Path(spec.get("path", ""))
        normalise(_read_file(path, key, spec.get("xpath", ".//Problem")), spec, key, str(path), domain)
    elif spec.get("kind") == "miniwob":
        miniwob_episodes(spec, key)
    elif spec.get("kind") not in {"generated", "hub"}:
        raise DataError(f"{key}.kind: must be one of generated, file, hub, miniwob (got {spec.get('kind')!r})")


# ---- generated grade-school word problems -------------------------------------------------------

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


def _train_or_test(spec: dict[str, Any], key: str, kind: str) -> str:
    """The split of data the project makes itself: train and test are disjoint by construction."""
    split = spec.get("split", "train")
    if split not in {"train", "test"}:
        raise DataError(f"{key}.split: {kind} data has splits train and test (got {split!r})")
    return split


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
    split = _train_or_test(spec, key, "generated")
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


# ---- MiniWob++ episodes (web domain) ------------------------------------------------------------

_SEED_RANGE = 2**30  # train seeds lie in [0, 2^30), test seeds in [2^30, 2^31): disjoint by construction


def miniwob_episodes(spec: dict[str, Any], key: str) -> list[tuple[str, int]]:
    """(task name, seed) pairs: `episodes` per task, seeds hashed from (seed, task, index) into the split's range.

    With `fresh_seeds`, iteration i (`spec["iteration"]`, default 1) gets the i-th block of
    `episodes` distinct seeds of each task's sequence, so every iteration explores new
    episodes (the authors' seed = id + 50 * iteration) and iteration 1 equals the static set.
    """
    from envisions_flow.environments.web import miniwob_html_dir

    names = spec.get("tasks", MINIWOB_TASKS)
    if not names:
        raise DataError(f"{key}.tasks: name at least one MiniWob task")
    unknown = [name for name in names if not (miniwob_html_dir() / f"{name}.html").is_file()]
    if unknown:
        raise DataError(f"{key}.tasks: unknown MiniWob task(s) {unknown} (the paper's 44 are datasets.MINIWOB_TASKS)")
    episodes = int(spec.get("episodes", 0))
    if episodes <= 0:
        raise DataError(f"{key}.episodes: a miniwob dataset needs episodes > 0 (episodes per task)")
    split = _train_or_test(spec, key, "miniwob")
    block = int(spec.get("iteration", 1)) if spec.get("fresh_seeds") else 1
    offset = _SEED_RANGE if split == "test" else 0
    out = []
    for name in names:
        seeds: list[int] = []
        seen: set[int] = set()
        for index in range(episodes * block * 10):
            if len(seeds) == episodes * block:
                break
            digest = hashlib.sha256(f"{spec.get('seed', 0)}:{name}:{index}".encode()).hexdigest()
            seed = offset + int(digest[:8], 16) % _SEED_RANGE
            if seed not in seen:
                seen.add(seed)
                seeds.append(seed)
        out += [(name, seed) for seed in sorted(seeds[episodes * (block - 1):])]
    return out


def miniwob_tasks(spec: dict[str, Any], key: str) -> pd.DataFrame:
    """Rows (id = "task:seed", question = the episode's observation, answer = task name) from the browser.

    The observation (utterance + HTML) is rendered here, once, so prompts are plain functions
    of the row (see environments/web.py).
    """
    from envisions_flow.environments.web import WebEnvironment, episode_id

    episodes = miniwob_episodes(spec, key)
    try:
        observations = WebEnvironment(workers=2, progress=True).observe(episodes)
    except RuntimeError as error:
        raise DataError(f"{key}: {error}") from None
    name = spec.get("name", key.split(".")[-1])
    return pd.DataFrame({"id": [episode_id(task, seed) for task, seed in episodes], "question": observations,
                         "answer": [task for task, _ in episodes], "source": name})
