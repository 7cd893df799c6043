"""MiniWob++ episodes (`kind: miniwob`, web): seeded (task, seed) pairs and their observations.
"""

from __future__ import annotations
import hashlib
from typing import Any
import pandas as pd
from envisions_flow.datasets.loaders import DataError, split_of_spec


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


_SEED_RANGE = 2**30  # train seeds lie in [0, 2^30), test seeds in [2^30, 2^31): disjoint by construction


def miniwob_episodes(spec: dict[str, Any], key: str) -> list[tuple[str, int]]:
    """(task name, seed) pairs: `episodes` per task, seeds hashed from (seed, task, index) into the split's range.

    With `fresh_seeds`, iteration i (`spec["iteration"]`, default 1) gets the i-th block of
    `episodes` distinct seeds of each task's sequence, so every iteration explores new
    episodes (the authors' seed = id + 50 * iteration) and iteration 1 equals the static set.
    """
    from envisions_flow.environments.web import miniwob_html_dir
    from envisions_flow.workflow.extras import require

    require("web", f"{key}: MiniWob++ episodes (the web domain)")

    names = spec.get("tasks", MINIWOB_TASKS)
    if not names:
        raise DataError(f"{key}.tasks: name at least one MiniWob task")
    unknown = [name for name in names if not (miniwob_html_dir() / f"{name}.html").is_file()]
    if unknown:
        raise DataError(f"{key}.tasks: unknown MiniWob task(s) {unknown} (the paper's 44 are datasets.MINIWOB_TASKS)")
    episodes = int(spec.get("episodes", 0))
    if episodes <= 0:
        raise DataError(f"{key}.episodes: a miniwob dataset needs episodes > 0 (episodes per task)")
    split = split_of_spec(spec, key, "miniwob")
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
