"""Environments: one protocol (base.Environment), one implementation per domain."""

from __future__ import annotations

from typing import Any

from ..sandbox import Limits
from .base import Environment, Execution, Task
from .math import MathEnvironment

__all__ = ["Environment", "Execution", "Task", "make_environment"]


def make_environment(domain: str, settings: dict[str, Any], answer_type: str, progress: bool = True) -> Environment:
    """The environment of a domain, configured from its settings block."""
    if domain == "math":
        execution = settings["execution"]
        limits = Limits(timeout_s=float(execution["timeout_s"]), memory_mb=int(execution["memory_mb"]))
        return MathEnvironment(answer_type=answer_type, limits=limits, workers=int(execution["workers"]),
                               progress=progress)
    raise ValueError(f"domains.{domain}: no environment implements this domain (available: math)")
