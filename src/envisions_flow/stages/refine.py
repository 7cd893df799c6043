"""Self-refinement (Steps 4 and 7): one refined program per sample, written from (x, a_k).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from envisions_flow.environments.base import Task
from envisions_flow.stages.common import (
    backend_for,
    generation_row,
    more_turns,
    one_sample_each,
    shard_seed,
    shard_size_of,
    stage_seed,
)
from envisions_flow.stages.settings import RefineSettings, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.shards import clear, files_signature, fingerprint, map_in_shards

log = logging.getLogger("envisions_flow")


def refine(config: dict[str, Any], run: str, iteration: int, samples_path: str, model_dir: str, out: str) -> None:
    """Self-refinement: one refined program per sample, written from (x, a_k) (Steps 4 and 7), kept in shards."""
    settings = settings_for(RefineSettings, config, run)
    samples = art.read_table(samples_path, art.GENERATIONS)
    environment = settings.train_environment()
    backend = backend_for(settings.generation, model_dir)
    max_new_tokens = int(settings.refine.max_new_tokens)
    seed = stage_seed(settings.generation.seed, iteration, 2, settings.seed_offset)

    def work(shard: Sequence[Any], index: int) -> list[dict[str, Any]]:
        tasks = [Task(row.id, row.question, row.answer) for row in shard]
        conversations = [environment.refine_prompt(task, row.program) for task, row in zip(tasks, shard)]
        prompts = [backend.render(messages) for messages in conversations]
        generations = one_sample_each(backend, prompts, max_new_tokens, shard_seed(seed, index))
        generations = more_turns(environment, backend, tasks, conversations, generations,
                                 lambda more, turn: one_sample_each(backend, more, max_new_tokens,
                                                              shard_seed(seed + 10 * turn, index)))
        return [generation_row(row, row.sample_idx, prompt, generation, environment, source_program=row.program)
                for row, prompt, generation in zip(shard, prompts, generations)]

    started = time.monotonic()
    rows = list(samples.itertuples())
    key = fingerprint("refine", samples[["id", "sample_idx", "question", "program"]].values.tolist(), max_new_tokens,
                      seed, files_signature(model_dir), shard_size_of(settings.generation))
    frame = map_in_shards(rows, shard_size_of(settings.generation), out, art.GENERATIONS, key, work)
    art.write_table(frame, out, art.GENERATIONS)
    clear(out)
    log.info("%s: %d refinements in %.0f s", out, len(frame), time.monotonic() - started)
