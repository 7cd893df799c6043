"""Self-exploration (Steps 1 and 7): K samples per input with their self-rewards, kept in shards.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from envisions_flow.environments.base import Task
from envisions_flow.generation.openai_backend import OpenAIChatBackend
from envisions_flow.stages.common import (
    backend_for,
    generation_row,
    more_turns,
    one_sample_each,
    shard_seed,
    shard_size_of,
    stage_seed,
    task_list,
)
from envisions_flow.stages.settings import ExploreSettings, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.shards import clear, files_signature, fingerprint, map_in_shards

log = logging.getLogger("envisions_flow")


def explore(config: dict[str, Any], run: str, iteration: int, tasks_path: str, model_dir: str, out: str) -> None:
    """Self-exploration: K samples per input with their self-rewards (Steps 1 and 7), kept in shards."""
    settings = settings_for(ExploreSettings, config, run)
    tasks = task_list(art.read_table(tasks_path, art.TASKS))
    environment = settings.train_environment()
    few_shot = iteration <= int(settings.explore.few_shot_iterations)
    if settings.strategy.explorer == "teacher":
        backend, model = OpenAIChatBackend(**settings.teacher), dict(settings.teacher)
    else:
        backend, model = backend_for(settings.generation, model_dir), files_signature(model_dir)
    k, max_new_tokens = int(settings.explore.k), int(settings.explore.max_new_tokens)
    seed = stage_seed(settings.generation.seed, iteration, 1, settings.seed_offset)

    def work(shard: Sequence[Task], index: int) -> list[dict[str, Any]]:
        conversations = [environment.explore_prompt(task, few_shot) for task in shard]
        prompts = [backend.render(messages) for messages in conversations]
        samples = backend.sample(prompts, k, max_new_tokens, shard_seed(seed, index))
        flat = more_turns(environment, backend, [task for task in shard for _ in range(k)],
                          [messages for messages in conversations for _ in range(k)],
                          [generation for generations in samples for generation in generations],
                          lambda more, turn: one_sample_each(backend, more, max_new_tokens,
                                                       shard_seed(seed + 10 * turn, index)))
        samples = [flat[start:start + k] for start in range(0, len(flat), k)]
        return [generation_row(task, sample_idx, prompt, generation, environment)
                for task, prompt, generations in zip(shard, prompts, samples)
                for sample_idx, generation in enumerate(generations)]

    started = time.monotonic()
    key = fingerprint("explore", [(t.id, t.question) for t in tasks], few_shot, k, max_new_tokens, seed, model,
                      shard_size_of(settings.generation))
    frame = map_in_shards(tasks, shard_size_of(settings.generation), out, art.GENERATIONS, key, work)
    art.write_table(frame, out, art.GENERATIONS)
    clear(out)
    log.info("%s: %d samples (%d inputs, few-shot=%s), %d tokens in %.0f s", out, len(frame), len(tasks), few_shot,
             int(frame["n_tokens"].sum()), time.monotonic() - started)
