"""Start-up checks that go beyond the JSON schema: files, fields and the model must exist.

The schema (config/schema.yaml) catches wrong types and unknown keys; these
checks catch what only the file system knows, so a run stops before any work
with one message naming the key, file or field.
"""

from __future__ import annotations

import re
from typing import Any

from envisions_flow.datasets.loaders import DataError, check_source, with_preset
from envisions_flow.environments.registry import EnvironmentConfigError, environment_class
from envisions_flow.workflow.models import ModelSpecError, resolve_source


class ConfigError(ValueError):
    """The configuration points at something that is not there."""


def domain_settings(config: dict[str, Any], domain: str) -> dict[str, Any]:
    """The settings block of one domain."""
    try:
        return config["domains"][domain]
    except KeyError:
        raise ConfigError(f"domains.{domain}: domain is not configured") from None


# The train data of one iteration, for train specs with `fresh_seeds` (web: new episodes every iteration).
_ITERATION_DATA = re.compile(r"train\.iter([1-9][0-9]*)")


def train_iteration(name: str) -> int | None:
    """The iteration of a per-iteration train data set ("train.iter3" -> 3); None for any other name."""
    match = _ITERATION_DATA.fullmatch(name)
    return int(match.group(1)) if match else None


def train_dataset(config: dict[str, Any], domain: str, iteration: int) -> str:
    """The data set iteration i explores: "train", or "train.iter<i>" when the train spec has fresh_seeds."""
    fresh = with_preset(domain_settings(config, domain)["train"]).get("fresh_seeds", False)
    return f"train.iter{int(iteration)}" if fresh else "train"


def dataset_key(domain: str, name: str) -> str:
    """The config key of a dataset, for messages: domains.math.train, domains.math.testsets.gsm8k."""
    train = name == "train" or train_iteration(name) is not None
    return f"domains.{domain}.{'train' if train else 'testsets.' + name}"


def dataset_spec(config: dict[str, Any], domain: str, name: str) -> dict[str, Any]:
    """The spec of the train set ("train"), of one iteration's train set ("train.iter<i>") or of a test set.

    Presets are applied; a per-iteration name adds `iteration` to the train spec
    (only for train specs with `fresh_seeds`).
    """
    settings = domain_settings(config, domain)
    iteration = train_iteration(name)
    if iteration is not None:
        spec = with_preset(settings["train"])
        if not spec.get("fresh_seeds"):
            raise ConfigError(f"domains.{domain}.train.fresh_seeds: {name} needs a train set with fresh seeds "
                              "per iteration")
        return {"name": name, **spec, "iteration": iteration}
    spec = settings["train"] if name == "train" else settings["testsets"].get(name)
    if spec is None:
        raise ConfigError(f"domains.{domain}.testsets.{name}: test set is not configured")
    return {"name": name, **with_preset(spec)}


def drop_removed_testsets(config: dict[str, Any]) -> None:
    """Remove the test sets an overlay config sets to null: a merge over config/config.yaml cannot delete a key."""
    for settings in (config.get("domains") or {}).values():
        if settings.get("testsets"):
            settings["testsets"] = {name: spec for name, spec in settings["testsets"].items() if spec is not None}


def check(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key whose target is missing or malformed."""
    try:
        resolve_source(config["model"])
    except ModelSpecError as error:
        raise ConfigError(str(error)) from None
    for domain, settings in config["domains"].items():
        try:
            environment = environment_class(domain, settings)
        except EnvironmentConfigError as error:
            raise ConfigError(str(error)) from None
        if not settings["testsets"]:
            raise ConfigError(f"domains.{domain}.testsets: at least one test set is needed")
        for name, spec in settings["testsets"].items():
            if spec.get("fresh_seeds"):
                raise ConfigError(f"domains.{domain}.testsets.{name}.fresh_seeds: only the train set draws fresh "
                                  "episodes per iteration; a test set stays fixed")
        datasets = {"train": settings["train"], **settings["testsets"]}
        for name, spec in datasets.items():
            try:
                check_source(spec, dataset_key(domain, name), environment, "train" if name == "train" else "test")
            except DataError as error:
                raise ConfigError(str(error)) from None
