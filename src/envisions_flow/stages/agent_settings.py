"""The settings objects of the agent runs' stages (IPR, synthetic mixtures): see settings.py."""

from __future__ import annotations

from envisions_flow.stages.settings import (
    Block,
    EnvironmentSpec,
    OnTrainSet,
    SampledBackend,
    Tokens,
    inline,
    setting,
    stage_settings,
)


@stage_settings
class Steps:
    max_steps: int
    max_new_tokens: int
    few_shot: bool


@stage_settings
class AgentSource:
    run: str
    teacher: bool


@stage_settings
class AgentSourceSettings(OnTrainSet):
    agent_source: AgentSource = setting()
    steps: Steps = setting()
    teacher: Block | None = setting(when=lambda view: view["agent_source"]["teacher"])


@stage_settings
class IprEval:
    eval_step_reward: bool
    mc_rollouts: int


@stage_settings
class MixtureMetrics:
    capability_similarity: float
    embedding_model: str
    bootstrap_samples: int


@stage_settings
class AgentEvaluateSettings:
    method: str
    steps: Steps
    testsets: Block
    environment: EnvironmentSpec = inline()
    generation: SampledBackend = setting()
    ipr: IprEval | None = setting(when=lambda view: view["method"] == "ipr")
    mixture: MixtureMetrics | None = setting(when=lambda view: view["method"] == "mixture")


@stage_settings
class IprSftSettings(OnTrainSet):
    training: Block = setting()


@stage_settings
class IprExplore:
    mc_rollouts: int
    tau: float
    pairs: str


@stage_settings
class IprExploreSettings(OnTrainSet):
    steps: Steps = setting()
    ipr: IprExplore = setting()
    generation: SampledBackend = setting()


@stage_settings
class IprTrain:
    learning_rate: float
    epochs: float
    beta: float
    sft_on: str
    losses: list[str]


@stage_settings
class IprTrainSettings:
    training: Block
    ipr: IprTrain


@stage_settings
class MixtureIndomain:
    samples_per_task: int


@stage_settings
class MixtureIndomainSettings(OnTrainSet):
    steps: Steps = setting()
    mixture: MixtureIndomain = setting()
    generation: SampledBackend = setting()


@stage_settings
class MixtureSynthetic:
    synthetic_tasks: int
    synthetic_attempts: int
    similarity_threshold: float
    embedding_model: str


@stage_settings
class MixtureSyntheticSettings:
    steps: Tokens
    mixture: MixtureSynthetic
    generation: SampledBackend = setting()


@stage_settings
class MixtureLora:
    lora: Block


@stage_settings
class MixtureTrainSettings(OnTrainSet):
    training: Block = setting()
    mixture: MixtureLora = setting()
