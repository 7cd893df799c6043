"""Prepare a data set: read it from its source (hub, file, or data the environment makes) into the TASKS table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from envisions_flow.datasets.loaders import load_tasks
from envisions_flow.environments.registry import environment_class
from envisions_flow.stages.settings import DataSettings, resolve
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.config import dataset_key

log = logging.getLogger("envisions_flow")


def prepare_data(config: dict[str, Any], domain: str, name: str, out: str | Path) -> None:
    from envisions_flow.workflow.dag import data_params

    settings = resolve(DataSettings, data_params(config, domain, name))
    environment = environment_class(domain, {"environment": settings.environment})
    spec = dict(settings.spec)
    frame = load_tasks(spec, dataset_key(domain, name), environment)
    art.write_table(frame, out, art.TASKS)
    log.info("%s: %d tasks from %s", out, len(frame), spec.get("kind"))
