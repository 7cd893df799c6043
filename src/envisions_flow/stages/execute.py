"""Execution (Steps 2-3 and 5-6): every program run in the environment, binary reward b and error class.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

from envisions_flow.environments.base import Task
from envisions_flow.stages.settings import ExecuteSettings, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.shards import clear, fingerprint, map_in_shards

log = logging.getLogger("envisions_flow")


EXECUTION_SHARD = 4_096    # programs per shard of execute


def execute(config: dict[str, Any], run: str, generations_path: str, out: str) -> None:
    """Run every program in the environment: binary reward b and error class (Steps 2-3 and 5-6).

    Verdicts are kept in shards of EXECUTION_SHARD programs, so a killed job resumes.
    """
    settings = settings_for(ExecuteSettings, config, run)
    generations = art.read_table(generations_path, art.GENERATIONS)
    environment = settings.train_environment()

    def work(shard: Sequence[Any], index: int) -> list[dict[str, Any]]:
        results = environment.execute([Task(row.id, row.question, row.answer) for row in shard],
                                      [row.program for row in shard])
        return [{"id": row.id, "sample_idx": row.sample_idx, "b": result.b, "value": result.value,
                 "error_class": result.error_class, "duration_s": result.duration_s}
                for row, result in zip(shard, results)]

    key = fingerprint("execute", generations[["id", "sample_idx", "question", "answer", "program"]].values.tolist(),
                      dict(settings.environment.execution))
    frame = map_in_shards(list(generations.itertuples()), EXECUTION_SHARD, out, art.EXECUTIONS, key, work)
    art.write_table(frame, out, art.EXECUTIONS)
    clear(out)
    classes = Counter(error_class or "correct" for error_class in frame["error_class"])
    log.info("%s: %d programs, %s", out, len(frame), dict(classes))
