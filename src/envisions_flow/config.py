"""Start-up checks that go beyond the JSON schema: files, fields and the model must exist.

The schema (config/schema.yaml) catches wrong types and unknown keys; these
checks catch what only the file system knows, so a run stops before any work
with one message naming the key, file or field.
"""

from __future__ import annotations

from typing import Any

from .datasets import DataError, check_source, with_preset
from .models import ModelSpecError, resolve_source


class ConfigError(ValueError):
    """The configuration points at something that is not there."""


def domain_settings(config: dict[str, Any], domain: str) -> dict[str, Any]:
    """The settings block of one domain."""
    try:
        return config["domains"][domain]
    except KeyError:
        raise ConfigError(f"domains.{domain}: domain is not configured") from None


def dataset_key(domain: str, name: str) -> str:
    """The config key of a dataset, for messages: domains.math.train, domains.math.testsets.gsm8k."""
    return f"domains.{domain}.{'train' if name == 'train' else 'testsets.' + name}"


def dataset_spec(config: dict[str, Any], domain: str, name: str) -> dict[str, Any]:
    """The spec of the train set ("train") or of a test set, presets applied."""
    settings = domain_settings(config, domain)
    spec = settings["train"] if name == "train" else settings["testsets"].get(name)
    if spec is None:
        raise ConfigError(f"domains.{domain}.testsets.{name}: test set is not configured")
    return {"name": name, **with_preset(spec)}


def check(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key whose target is missing or malformed."""
    try:
        resolve_source(config["model"])
    except ModelSpecError as error:
        raise ConfigError(str(error)) from None
    for domain, settings in config["domains"].items():
        datasets = {"train": settings["train"], **settings["testsets"]}
        for name, spec in datasets.items():
            try:
                check_source(spec, dataset_key(domain, name))
            except DataError as error:
                raise ConfigError(str(error)) from None
        if not settings["testsets"]:
            raise ConfigError(f"domains.{domain}.testsets: at least one test set is needed")
