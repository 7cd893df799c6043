"""One typed settings object per stage: what decides its output, resolved once from a run's settings.

Each stage declares its settings as a frozen dataclass whose fields mirror the config: a field named
`explore` of a dataclass type is the run's `explore` block, read field by field; a `Mapping` field is a
block read whole (a trainer's options). `resolve` builds the object from a run's view (`run_view`: its
merged settings, plus the global `generation` and `model` blocks and its `domain`) and reads nothing
else, and `as_params` turns it into the plain dict that is the rule's `params` (its rerun trigger) and
the key that decides which runs share an artifact (workflow/dag.py). The stage reads only the object,
so what it reads, what re-runs it and what it shares cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from envisions_flow.workflow.runs import method_of, parse_run_dir, run_settings

T = TypeVar("T")

INLINE = "\0inline"  # a field resolved from the same mapping as its parent (a group of the parent's keys)


stage_settings = dataclasses.dataclass(frozen=True, kw_only=True)  # how every settings class is declared


class SettingsError(ValueError):
    """A stage's setting is missing from the run's settings (the schema should have given it a default)."""


def setting(*, key: str | None = None, when: Callable[[Mapping[str, Any]], bool] | None = None,
            default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A field read from `key` (default: the field's name; INLINE: the parent's own mapping), only where
    `when(block)` holds (else None)."""
    metadata = {"key": key, "when": when}
    if default is dataclasses.MISSING and default_factory is dataclasses.MISSING and when is not None:
        default = None
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def inline() -> Any:
    return setting(key=INLINE)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (also through `X | None`), None for a plain value."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def plain(value: Any) -> Any:
    """A copy of a config value as plain dicts, lists and scalars (nothing of the mapping it came from)."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def resolve(cls: type[T], block: Mapping[str, Any], where: str = "") -> T:
    """`cls` with each field read from `block` as its declaration says; nothing else of `block` is read."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        key, when = field.metadata.get("key") or field.name, field.metadata.get("when")
        if when is not None and not when(block):
            values[field.name] = None
            continue
        nested = _dataclass_of(hints[field.name])
        if key == INLINE:
            values[field.name] = resolve(nested, block, where)
            continue
        if key not in block:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SettingsError(f"{where}{key}: missing, and {cls.__name__} has no default for it")
            continue
        value = block[key]
        if nested is not None and value is not None:
            values[field.name] = resolve(nested, value, f"{where}{key}.")
        else:
            values[field.name] = plain(value)
    return cls(**values)


def as_params(settings: Any) -> Any:
    """A settings object as a plain nested dict (fields in declaration order, None left out): the rule's
    params and the sharing key, stable across invocations."""
    if dataclasses.is_dataclass(settings):
        return {field.name: as_params(getattr(settings, field.name)) for field in dataclasses.fields(settings)
                if getattr(settings, field.name) is not None}
    return settings


def run_view(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """Everything a stage of run `run` (its directory: "math", "math/star") may read: the run's merged
    settings, its domain and method, and the config's global `generation` and `model` blocks."""
    domain, name = parse_run_dir(run)
    return {**run_settings(config, domain, name), "domain": domain, "method": method_of(config, name),
            "generation": config.get("generation") or {}, "model": config.get("model") or {}}


def settings_for(cls: type[T], config: Mapping[str, Any], run: str) -> T:
    """A stage's settings for one run, resolved from the config as its rule's params are."""
    return resolve(cls, run_view(config, run), f"{run}: ")


# ---- blocks shared by several stages ------------------------------------------------------------------

Block = Mapping[str, Any]  # a config block read whole: every key of it decides the stage's output


@stage_settings
class Backend:
    """`generation` as the policy's backend reads it (common.load_policy); vLLM keys only when set."""
    backend: str = "transformers"
    batch_size: int | str = "auto"
    dtype: str = "auto"
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None


@stage_settings
class Sampling(Backend):
    """`generation` for stages that sample: the backend, the seed and the shard size (explore, refine)."""
    seed: int = 0
    shard_size: int | None = None


@stage_settings
class SampledBackend(Backend):
    """`generation` for stages that sample without shards (judge, IPR, mixtures)."""
    seed: int = 0


@stage_settings
class Seed:
    """`generation.seed` alone, for stages that draw but do not generate (selection)."""
    seed: int = 0


@stage_settings
class EnvironmentSpec:
    """What builds a domain's environment (environments/registry.py make_environment)."""
    domain: str
    execution: Block
    environment: str | None = None
    environment_options: Block = setting(default_factory=dict)

    def make(self, name: str, spec: Block, progress: bool = True) -> Any:
        """The environment set up for one data set (`name`, its spec: answer type, world assumption)."""
        from envisions_flow.datasets.loaders import with_preset
        from envisions_flow.environments.registry import make_environment

        settings = {"environment": self.environment, "environment_options": dict(self.environment_options),
                    "execution": dict(self.execution)}
        return make_environment(self.domain, settings, {"name": name, **with_preset(dict(spec))}, progress)


@stage_settings
class OnTrainSet:
    """The environment on the domain's train set, as most stages use it."""
    environment: EnvironmentSpec = inline()
    train: Block = setting()

    def train_environment(self) -> Any:
        return self.environment.make("train", self.train)


@stage_settings
class Tokens:
    max_new_tokens: int


# ---- the whole-program pipeline -------------------------------------------------------------------


@stage_settings
class ExploreBlock:
    k: int
    max_new_tokens: int
    few_shot_iterations: int


@stage_settings
class Explorer:
    explorer: str


@stage_settings
class ExploreSettings(OnTrainSet):
    explore: ExploreBlock = setting()
    strategy: Explorer = setting()
    teacher: Block | None = setting(when=lambda view: view["strategy"]["explorer"] == "teacher")
    generation: Sampling = setting()
    seed_offset: int = 0


@stage_settings
class RefineSettings(OnTrainSet):
    refine: Tokens = setting()
    generation: Sampling = setting()
    seed_offset: int = 0


@stage_settings
class ExecuteSettings(OnTrainSet):
    pass


@stage_settings
class PoolStrategy:
    refine: bool
    pool: bool


@stage_settings
class PoolSettings(OnTrainSet):
    strategy: PoolStrategy = setting()


@stage_settings
class SelectionBlock:
    n1: int
    n2: int
    u1_rule: str


@stage_settings
class SelectStrategy:
    ranking: str
    dpo: bool
    labels: str


@stage_settings
class SelectSettings:
    selection: SelectionBlock
    strategy: SelectStrategy
    generation: Seed = setting()
    seed_offset: int = 0


@stage_settings
class JudgeBlock:
    judge_samples: int
    judge_max_new_tokens: int


@stage_settings
class JudgeSettings:
    self_rewarding: JudgeBlock
    generation: SampledBackend = setting()
    seed_offset: int = 0


@stage_settings
class TrainStrategy:
    sft: str
    l2: bool
    dpo: bool
    init: str


@stage_settings
class TrainSettings(OnTrainSet):
    training: Block = setting()
    dpo: Block = setting()
    strategy: TrainStrategy = setting()


@stage_settings
class Warmup:
    warmup: str | None = None


@stage_settings
class WarmupSettings:
    training: Block
    self_rewarding: Warmup


@stage_settings
class EvalBlock:
    max_new_tokens: int
    self_refine: bool


@stage_settings
class EvaluateSettings:
    eval: EvalBlock
    testsets: Block
    environment: EnvironmentSpec = inline()
    generation: Backend = setting()


@stage_settings
class MarginsSettings(OnTrainSet):
    """Δlog p reads the environment's prompts (and the checkpoint and U2 pairs it is given)."""


@stage_settings
class AnalysisSettings(OnTrainSet):
    """EA/STB count inputs by the environment's `exploration_unit`."""


@stage_settings
class DataSettings:
    """A data set's spec (presets applied, `name`, per-iteration `iteration`) and the environment class
    that loads it; resolved per data set (workflow/dag.py data_settings), not per run."""
    domain: str
    spec: Block
    environment: str | None = None


@stage_settings
class ModelSettings:
    model: Block
