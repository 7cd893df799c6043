"""What every stage shares: its generation backend, seeds and shards, the rows it writes.

A stage names its run by the run's directory under results/ ("math" for the default ENVISIONS run,
"math/star" for a named one) and reads what decides its output from its settings object (settings.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from envisions_flow.environments.base import Environment, Task
from envisions_flow.generation.base import Generation, load_backend
from envisions_flow.stages.settings import Backend, Sampling
from envisions_flow.workflow.runs import parse_run_dir

log = logging.getLogger("envisions_flow")


DEFAULT_SHARD_SIZE = 256   # inputs per shard of explore and refine


def task_list(frame: pd.DataFrame) -> list[Task]:
    return [Task(row.id, row.question, row.answer) for row in frame.itertuples()]


VLLM_OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len")


def backend_for(generation: Backend, model_dir: str | Path, engines: int = 1):
    """The policy's generation backend; `engines`: models this process holds (vLLM shares GPU memory between them)."""
    options: dict[str, Any] = {}
    if generation.backend == "vllm":
        # set keys only: the schema gives them no defaults (finished runs keep their params), VLLMBackend has its own
        options = {key: getattr(generation, key) for key in VLLM_OPTIONS if getattr(generation, key) is not None}
        if engines > 1:
            options["engines"] = engines
    batch_size = generation.batch_size
    return load_backend(generation.backend, model_dir, batch_size=batch_size if batch_size == "auto" else int(batch_size),
                        dtype=generation.dtype, **options)


def training_report(run: str, step: str, out: str | Path) -> dict[str, Any]:
    """Where `training.report_to` logs a training job: run name `<domain>/<run>/<step>` (step: iter<i>, warmup,
    sft), TensorBoard event files beside the checkpoint (`<step dir>/tensorboard/`)."""
    domain, name = parse_run_dir(run)
    return {"run_name": f"{domain}/{name}/{step}", "log_dir": Path(out).parent / "tensorboard"}


def stage_seed(seed: int, iteration: int, stage: int, seed_offset: int = 0) -> int:
    """The seed of one stage of one iteration: from `generation.seed` plus the run's `seed_offset`
    (a replicate's), so replicates of a run draw their own samples and rankings."""
    return (int(seed) + int(seed_offset)) * 1_000_003 + iteration * 101 + stage


def shard_size_of(generation: Sampling) -> int:
    """Inputs per shard of explore and refine (`generation.shard_size`); each shard has its own seed."""
    return int(generation.shard_size or DEFAULT_SHARD_SIZE)


def shard_seed(seed: int, index: int) -> int:
    return seed + 7_919 * index


def one_sample_each(backend: Any, prompts: list[str], max_new_tokens: int, seed: int) -> list[Generation]:
    """One sample per prompt (refinements, later turns)."""
    return [generation for (generation,) in backend.sample(prompts, 1, max_new_tokens, seed)]


def generation_row(task: Any, sample_idx: int, prompt: str, generation: Generation, environment: Environment,
                    source_program: str = "") -> dict[str, Any]:
    """One row of the GENERATIONS schema."""
    return {"id": task.id, "sample_idx": sample_idx, "question": task.question, "answer": task.answer,
            "prompt": prompt, "completion": generation.text, "program": environment.extract_program(generation.text),
            "n_tokens": generation.n_tokens, "logprob_sum": generation.logprob_sum,
            "self_reward": generation.self_reward, "source_program": source_program}


def more_turns(environment: Environment, backend: Any, tasks: Sequence[Task], conversations: Sequence[Any],
                generations: Sequence[Generation], generate: Callable[[list[str], int], list[Generation]]
                ) -> list[Generation]:
    """Multi-turn environments (web with `max_turns` > 1): while a program leaves its episode open,
    show the policy the page and let it write the next program.

    `generate(prompts, turn)` gives one generation per prompt. Each input comes back as one
    generation whose text renders the joined program (it replays every turn in a fresh
    episode) and whose log-prob and tokens are those of all turns, so the self-reward is the
    mean over the whole trajectory. Single-turn environments get `generations` back as they are.
    """
    max_turns = int(getattr(environment, "max_turns", 1))
    merged, conversations = list(generations), list(conversations)
    last = [environment.extract_program(generation.text) for generation in generations]
    joined = list(last)
    for turn in range(2, max_turns + 1):
        observations = environment.open_episodes(tasks, joined)  # type: ignore[attr-defined]
        active = [i for i, observation in enumerate(observations) if observation and last[i]]
        if not active:
            break
        for i in active:
            conversations[i] = environment.next_turn_prompt(conversations[i], last[i], observations[i])  # type: ignore[attr-defined]
        replies = generate([backend.render(conversations[i]) for i in active], turn)
        for i, reply in zip(active, replies):
            last[i] = environment.extract_program(reply.text)
            joined[i] = f"{joined[i]}\n{last[i]}" if last[i] else joined[i]
            counted = merged[i].token_count is not None or reply.token_count is not None
            merged[i] = Generation(environment.render_solution(joined[i]), merged[i].token_ids + reply.token_ids,
                                   merged[i].logprob_sum + reply.logprob_sum,
                                   merged[i].n_tokens + reply.n_tokens if counted else None)
        log.info("turn %d: %d of %d episodes were still open", turn, len(active), len(merged))
    return merged


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def iteration_of(path: str | Path) -> int:
    return int(Path(path).parent.name.removeprefix("iter"))
