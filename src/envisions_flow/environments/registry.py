"""Which environment serves a domain: a class named by import path, configured from the domain's settings.

A domain's `environment` key names a class as `package.module:Class` (the built-in domains math, logic
and web default to the package's own classes, registered the same way), so a user's environment (an SQL
executor, a theorem prover, another benchmark) plugs in without editing the package. The class builds
itself from the domain's `execution` block, its `environment_options` and the data set it runs on
(`from_config`); without that classmethod it is called with the options as keyword arguments.
Everything else it offers beyond the `Environment` protocol is optional (see base.py).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from envisions_flow.environments.base import Environment

BUILT_IN = {
    "math": "envisions_flow.environments.math:MathEnvironment",
    "logic": "envisions_flow.environments.logic:LogicEnvironment",
    "web": "envisions_flow.environments.web:WebEnvironment",
}


class EnvironmentConfigError(ValueError):
    """A domain's environment cannot be found or configured; the message names the config key."""


def environment_path(domain: str, settings: Mapping[str, Any]) -> str:
    """The `module:Class` path of a domain's environment: its `environment` key, or the built-in of that name."""
    path = settings.get("environment") or BUILT_IN.get(domain)
    if not path:
        raise EnvironmentConfigError(f"domains.{domain}.environment: name the environment class of this domain as "
                                     f"'package.module:Class' (built-in domains: {', '.join(BUILT_IN)})")
    return path


def environment_class(domain: str, settings: Mapping[str, Any]) -> type:
    """Import a domain's environment class; a wrong path stops the run naming the key."""
    path = environment_path(domain, settings)
    module_name, _, class_name = path.partition(":")
    key = f"domains.{domain}.environment"
    if not module_name or not class_name:
        raise EnvironmentConfigError(f"{key}: {path!r} is not 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EnvironmentConfigError(f"{key}: cannot import {module_name!r} ({error}); is it installed or on "
                                     "PYTHONPATH?") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise EnvironmentConfigError(f"{key}: {module_name!r} has no class {class_name!r}")
    missing = [name for name in ("explore_prompt", "refine_prompt", "extract_program", "render_solution",
                                 "program_key", "execute") if not callable(getattr(cls, name, None))]
    if missing and not is_step_environment(cls):
        raise EnvironmentConfigError(f"{key}: {path} lacks {missing} of the Environment protocol "
                                     "(environments/base.py)")
    return cls


def is_step_environment(cls: type) -> bool:
    """Whether a class also acts one step at a time (StepEnvironment), as the agent methods need."""
    return callable(getattr(cls, "replay", None)) and isinstance(getattr(cls, "step_instruction", None), str)


def make_environment(domain: str, settings: Mapping[str, Any], dataset: Mapping[str, Any],
                     progress: bool = True) -> Environment:
    """The environment of a domain, configured from its settings block and the dataset it runs on."""
    cls = environment_class(domain, settings)
    options = dict(settings.get("environment_options") or {})
    build = getattr(cls, "from_config", None)
    try:
        if build is not None:
            return build(domain, settings["execution"], options, dataset, progress)
        return cls(**options)
    except TypeError as error:
        if "keyword argument" not in str(error):
            raise
        raise EnvironmentConfigError(f"domains.{domain}.environment_options: {cls.__name__} does not take these "
                                     f"options ({error})") from None


def execution_options(execution: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    """The constructor arguments the built-ins take from `execution`: limits, workers, progress."""
    from envisions_flow.environments.sandbox import Limits

    limits = Limits(timeout_s=float(execution["timeout_s"]), memory_mb=int(execution["memory_mb"]))
    return {"limits": limits, "workers": int(execution["workers"]), "progress": progress}


def sandboxed_options(domain: str, execution: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    """`execution_options` and the confinement `execution.sandbox` asks for, for built-ins that run programs
    in the sandbox."""
    from envisions_flow.environments.sandbox import Confinement

    confinement = Confinement(mode=execution.get("sandbox", "strict"), key=f"domains.{domain}.execution.sandbox")
    return {**execution_options(execution, progress), "confinement": confinement}


def sandbox_modes(config: Mapping[str, Any]) -> dict[str, str]:
    """`execution.sandbox` of every domain whose environment runs programs in the sandbox (`uses_sandbox`),
    by config key: what the start-up check of the kernel layers demands."""
    return {f"domains.{domain}.execution.sandbox": settings.get("execution", {}).get("sandbox", "strict")
            for domain, settings in config["domains"].items()
            if getattr(environment_class(domain, settings), "uses_sandbox", False)}
