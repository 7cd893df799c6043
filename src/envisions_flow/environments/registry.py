"""Which environment serves a domain, configured from the domain's settings block."""

from __future__ import annotations

from typing import Any

from envisions_flow.environments.base import Environment
from envisions_flow.environments.logic import LogicEnvironment
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.environments.math_answers import ABSOLUTE_AND_RELATIVE, NUMERIC
from envisions_flow.environments.sandbox import Limits
from envisions_flow.environments.web import WebEnvironment


def make_environment(domain: str, settings: dict[str, Any], dataset: dict[str, Any], progress: bool = True) -> Environment:
    """The environment of a domain, configured from its settings block and the dataset it runs on."""
    execution = settings["execution"]
    limits = Limits(timeout_s=float(execution["timeout_s"]), memory_mb=int(execution["memory_mb"]))
    common = {"limits": limits, "workers": int(execution["workers"]), "progress": progress}
    if domain == "math":
        return MathEnvironment(answer_type=dataset.get("answer_type", NUMERIC),
                               numeric_match=str(execution.get("numeric_match", ABSOLUTE_AND_RELATIVE)), **common)
    if domain == "logic":
        return LogicEnvironment(closed_world=bool(dataset.get("closed_world", False)), **common)
    if domain == "web":
        return WebEnvironment(reward_threshold=float(execution.get("reward_threshold", 0.8)),
                              max_actions=int(execution.get("max_actions", 50)),
                              max_turns=int(execution.get("max_turns", 1)),
                              browser_relaunches=int(execution.get("browser_relaunches", 3)), **common)
    raise ValueError(f"domains.{domain}: no environment implements this domain (available: math, logic, web)")
