"""The synthetic-mixture stages: label-free in-domain data, out-of-domain synthesis, LoRA training, metrics.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Sequence

from envisions_flow.environments.base import Task
from envisions_flow.methods.agents import Step, Trajectory
from envisions_flow.stages.agents import (
    is_solved,
    read_trajectories,
    run_policy,
    success_threshold,
    write_trajectories,
)
from envisions_flow.stages.agent_settings import (
    AgentEvaluateSettings,
    MixtureIndomainSettings,
    MixtureSyntheticSettings,
    MixtureTrainSettings,
)
from envisions_flow.stages.common import backend_for, mean, stage_seed, task_list, training_report
from envisions_flow.stages.settings import settings_for
from envisions_flow.workflow import artifacts as art

log = logging.getLogger("envisions_flow")


EMBEDDING_CACHE = "results/embedding_cache"


def _embedder(embedding_model: str) -> Any:
    from envisions_flow.methods.mixture import Embedder

    return Embedder(embedding_model, EMBEDDING_CACHE)


_VALUES = re.compile(r'"[^"]*"|“[^”]*”|\'[^\']*\'|\b\d+(?:\.\d+)?\b')


def template_of(objective: str) -> str:
    """A task's intent template: its objective with quoted values and numbers masked ("Click on {x}.")."""
    return _VALUES.sub("{x}", objective)


def _step_text(step: Step) -> str:
    """What VERTEX_DTW embeds of a step, f(o_t, a_t): the action first, so a long page cannot truncate it away."""
    return f"{step.action}\n{step.observation}"


def mixture_metrics(settings: AgentEvaluateSettings, environment: Any, tasks: Sequence[Task],
                    trajectories: Sequence[Trajectory], references_path: str) -> dict[str, Any]:
    """Functional correctness, capability score and VERTEX_DTW with bootstrap intervals (mixture paper §3).

    The trivial agent is a real episode with no action: tasks it solves do not count towards a
    capability, and its VERTEX_DTW (one step: the first page, no action) is each task's baseline,
    so doing nothing scores 0.
    """
    from envisions_flow.methods.agent_metrics import (
        capability_groups,
        capability_score,
        metric_summary,
        trivial_baseline,
        vertex_dtw,
    )
    from envisions_flow.methods.mixture import objective_of

    mixture = settings.mixture
    embedder = _embedder(mixture.embedding_model)
    threshold = success_threshold(environment)
    success = [is_solved(t, threshold) for t in trajectories]
    trivial = [o.done and o.reward >= threshold for o in environment.replay(tasks, [[] for _ in tasks])]
    templates = [template_of(objective_of(task.question)) for task in tasks]
    groups = capability_groups(embedder.encode(templates), float(mixture.capability_similarity))
    references: dict[str, list[Trajectory]] = {}
    for reference in read_trajectories(references_path):
        references.setdefault(reference.task.id, []).append(reference)
    vertex = []
    for task, trajectory in zip(tasks, trajectories):
        refs = [embedder.encode([_step_text(step) for step in r.steps]) for r in references.get(task.id, []) if r.steps]
        if not refs:
            vertex.append(float("nan"))
            continue
        do_nothing = embedder.encode([_step_text(Step(task.question, "", "", 0.0, True, ""))])
        test = embedder.encode([_step_text(step) for step in trajectory.steps]) if trajectory.steps else do_nothing
        vertex.append(vertex_dtw(test, refs, trivial_baseline(do_nothing, refs)))
    summary = metric_summary(success, trivial, groups, vertex, samples=int(mixture.bootstrap_samples),
                             seed=int(settings.generation.seed))
    summary["trivial"] = {"accuracy": mean([float(t) for t in trivial]),
                          "capability_score": capability_score(groups, trivial, trivial)}
    return summary


def mixture_indomain(config: dict[str, Any], run: str, iteration: int, policy_dir: str, tasks_path: str,
                     out: str, out_summary: str) -> None:
    """The policy's own episodes on the training tasks, filtered without labels (in-domain data).

    The summary also says how the kept and dropped episodes actually ended (the paper's Table 1
    measures its filter that way); the filter itself never reads a reward.
    """
    from envisions_flow.methods.mixture import filter_trajectories

    settings = settings_for(MixtureIndomainSettings, config, run)
    environment = settings.train_environment()
    tasks = task_list(art.read_table(tasks_path, art.TASKS))
    untrained = iteration == 1
    trajectories = run_policy(environment, backend_for(settings.generation, policy_dir), tasks, settings.steps,
                              greedy=False, few_shot=bool(settings.steps.few_shot) and untrained,
                              n=int(settings.mixture.samples_per_task),
                              seed=stage_seed(settings.generation.seed, iteration, 11))
    kept, dropped = filter_trajectories(trajectories)
    threshold = success_threshold(environment)
    solved = {t.episode_id for t in trajectories if is_solved(t, threshold)}
    write_trajectories(kept, out)
    art.write_json({"trajectories": len(trajectories), "kept": len(kept), "dropped": dropped,
                    "kept_successful": sum(t.episode_id in solved for t in kept),
                    "dropped_successful": len(solved) - sum(t.episode_id in solved for t in kept)}, out_summary)
    log.info("%s: kept %d of %d episodes (dropped: %s)", out, len(kept), len(trajectories), dropped)


def mixture_synthetic(config: dict[str, Any], run: str, iteration: int, policy_dir: str, indomain_path: str,
                      out: str, out_summary: str) -> None:
    """Out-of-domain tasks with hypothetical trajectories, kept below the similarity threshold."""
    from envisions_flow.methods.mixture import objective_of, synthesize

    settings = settings_for(MixtureSyntheticSettings, config, run)
    mixture = settings.mixture
    indomain = read_trajectories(indomain_path)
    objectives = [objective_of(t.task.question) for t in indomain]
    synthetic, counts = synthesize(backend_for(settings.generation, policy_dir), indomain, objectives,
                                   _embedder(mixture.embedding_model), int(mixture.synthetic_tasks),
                                   int(mixture.synthetic_attempts), float(mixture.similarity_threshold),
                                   4 * int(settings.steps.max_new_tokens),
                                   stage_seed(settings.generation.seed, iteration, 13))
    write_trajectories(synthetic, out)
    art.write_json(counts, out_summary)
    log.info("%s: %s", out, counts)


def mixture_train(config: dict[str, Any], run: str, iteration: int, init_model: str, indomain_path: str | None,
                  synthetic_path: str | None, out: str) -> None:
    """LoRA fine-tuning on the run's mixture: balanced single-step examples of its trajectories."""
    from envisions_flow.methods.mixture import balanced_steps, step_conversation
    from envisions_flow.training.examples import trajectory_example
    from envisions_flow.training.trainers import load_tokenizer, train_trajectories
    from envisions_flow.workflow.extras import require

    require("agents", "LoRA fine-tuning (mixture runs)")

    settings = settings_for(MixtureTrainSettings, config, run)
    environment = settings.train_environment()
    trajectories = [t for path in (indomain_path, synthetic_path) if path for t in read_trajectories(path)]
    tokenizer = load_tokenizer(init_model)
    examples = []
    for trajectory, index in balanced_steps(trajectories, int(settings.training["seed"]) + iteration):
        messages, trained = step_conversation(environment, trajectory, index)
        examples.append(trajectory_example(tokenizer, messages, trained))
    metrics = train_trajectories(init_model, examples, dict(settings.training), out,
                                 lora=dict(settings.mixture.lora),
                                 **training_report(run, f"iter{iteration}", out))
    log.info("%s: %d step examples from %d trajectories", out, metrics["train_examples"], len(trajectories))
