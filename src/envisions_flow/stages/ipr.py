"""IPR's stages: SFT on expert trajectories, step-level exploration with Monte Carlo rewards, o-DPO + s-DPO + SFT.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

from envisions_flow.methods.agents import Trajectory
from envisions_flow.stages.agents import (
    models_in_process,
    read_trajectories,
    scorer_backend,
    step_conversations,
)
from envisions_flow.stages.agent_settings import (
    AgentEvaluateSettings,
    IprExploreSettings,
    IprSftSettings,
    IprTrainSettings,
)
from envisions_flow.stages.common import backend_for, mean, stage_seed, training_report
from envisions_flow.stages.settings import settings_for
from envisions_flow.workflow import artifacts as art

log = logging.getLogger("envisions_flow")


def ipr_step_reward(settings: AgentEvaluateSettings, environment: Any, policy: Any, model_dir: str,
                    scorer_dir: str, trajectories: Sequence[Trajectory], iteration: int) -> dict[str, Any]:
    """The mean Monte Carlo step reward of each test trajectory's actions under the frozen SFT scorer."""
    from envisions_flow.methods.ipr import mean_step_rewards

    scorer = scorer_backend(settings.generation, scorer_dir, policy, model_dir)
    steps = settings.steps
    rewards = mean_step_rewards(environment, scorer, trajectories, n_rollouts=int(settings.ipr.mc_rollouts),
                                max_steps=int(steps.max_steps), max_new_tokens=int(steps.max_new_tokens),
                                seed=stage_seed(settings.generation.seed, iteration, 7))
    return {"average_step_reward": mean(rewards)}


def ipr_sft(config: dict[str, Any], run: str, base_model: str, experts_path: str, out: str) -> None:
    """The base agent: SFT on the expert trajectories, loss on the agent's turns only (paper Eq. 2)."""
    from envisions_flow.training.examples import trajectory_example
    from envisions_flow.training.trainers import load_tokenizer, train_trajectories

    settings = settings_for(IprSftSettings, config, run)
    experts = read_trajectories(experts_path)
    if not experts:
        raise ValueError(f"{experts_path}: no expert trajectories to fine-tune on (the run's agent_source "
                         "solved none of the training tasks)")
    environment = settings.train_environment()
    tokenizer = load_tokenizer(base_model)
    examples = [trajectory_example(tokenizer, messages) for messages in step_conversations(environment, experts)]
    metrics = train_trajectories(base_model, examples, dict(settings.training), out, **training_report(run, "sft", out))
    log.info("%s: SFT on %d expert trajectories, training loss %s", out, len(experts),
             metrics.get("sft", {}).get("train_loss", "-"))


def ipr_explore(config: dict[str, Any], run: str, iteration: int, policy_dir: str, scorer_dir: str,
                experts_path: str, out_steps: str, out_pairs: str) -> None:
    """Step rewards along every expert trajectory and the contrastive pairs they give (paper §3.2-3.3)."""
    from envisions_flow.methods.ipr import contrastive_pairs, explore_expert

    settings = settings_for(IprExploreSettings, config, run)
    ipr, steps = settings.ipr, settings.steps
    environment = settings.train_environment()
    experts = read_trajectories(experts_path)
    policy = backend_for(settings.generation, policy_dir, engines=models_in_process(scorer_dir, policy_dir))
    scorer = scorer_backend(settings.generation, scorer_dir, policy, policy_dir)
    rows = explore_expert(environment, policy, scorer, experts, n_rollouts=int(ipr.mc_rollouts),
                          max_steps=int(steps.max_steps), max_new_tokens=int(steps.max_new_tokens),
                          seed=stage_seed(settings.generation.seed, iteration, 5))
    art.write_table(rows, out_steps, art.IPR_STEPS)
    pairs = contrastive_pairs(environment, rows, experts, float(ipr.tau),
                              both_directions=ipr.pairs == "both_directions")
    art.write_table(pairs, out_pairs, art.IPR_PAIRS)
    kinds = Counter(pair["kind"] for pair in pairs)
    log.info("%s: %d step rewards along %d expert trajectories; %d outcome and %d step pairs", out_pairs,
             len(rows), len(experts), kinds["outcome"], kinds["step"])


def ipr_train(config: dict[str, Any], run: str, iteration: int, policy_dir: str, reference_dir: str,
              pairs_path: str, out: str) -> None:
    """The previous agent trained on this iteration's pairs, the SFT agent as the DPO reference (paper §3.3)."""
    from envisions_flow.training.ipr_trainer import train_ipr

    settings = settings_for(IprTrainSettings, config, run)
    ipr = settings.ipr
    pairs = art.read_table(pairs_path, art.IPR_PAIRS).to_dict("records")
    training = {**settings.training, "learning_rate": float(ipr.learning_rate), "epochs": float(ipr.epochs),
                "lr_scheduler": "cosine"}
    metrics = train_ipr(policy_dir, reference_dir, pairs, training, out, float(ipr.beta), sft_on=ipr.sft_on,
                        losses=tuple(ipr.losses), **training_report(run, f"iter{iteration}", out))
    log.info("%s: %d outcome and %d step pairs", out, metrics["outcome_pairs"], metrics["step_pairs"])
