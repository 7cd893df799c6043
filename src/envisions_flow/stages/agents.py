"""Stages of the agent runs (IPR and the synthetic mixtures), called by the scripts of rules/agents.smk,
rules/ipr.smk and rules/mixture.smk.

They share the whole-program pipeline's parts rather than copying it: the environment
(here in step mode, agents.StepEnvironment), the generation backend, the trainer
(training/) and the Parquet artifacts; what is new is the step-level data each method
builds (ipr.py, mixture.py) and the metrics (agent_metrics.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import pandas as pd

from envisions_flow.datasets.loaders import with_preset
from envisions_flow.environments.base import Task
from envisions_flow.generation.openai_backend import OpenAIChatBackend
from envisions_flow.methods.agents import (
    Start,
    Step,
    Trajectory,
    react_messages,
    rollout,
    trajectories_from_frame,
    trajectory_rows,
)
from envisions_flow.stages.agent_settings import AgentEvaluateSettings, AgentSourceSettings, Steps
from envisions_flow.stages.common import backend_for, mean, task_list
from envisions_flow.stages.settings import Backend, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.runs import parse_run_dir

log = logging.getLogger("envisions_flow")


def is_solved(trajectory: Trajectory, threshold: float) -> bool:
    """Success: the episode ended with a final reward of at least the threshold."""
    return trajectory.finished and trajectory.final_reward >= threshold


def models_in_process(scorer_dir: str | None, policy_dir: str) -> int:
    """Models a stage holds: the policy, and IPR's frozen scorer when it is another checkpoint."""
    return 1 if scorer_dir is None or str(scorer_dir) == str(policy_dir) else 2


def scorer_backend(generation: Backend, scorer_dir: str, policy: Any, policy_dir: str) -> Any:
    """IPR's frozen scorer: the policy's own backend when both are the same checkpoint (one model in memory)."""
    engines = models_in_process(scorer_dir, policy_dir)
    return policy if engines == 1 else backend_for(generation, scorer_dir, engines=engines)


def success_threshold(environment: Any) -> float:
    """The final reward that counts as success (the environment's, else any reward at all)."""
    return float(getattr(environment, "reward_threshold", 1e-9))


def run_policy(environment: Any, policy: Any, tasks: Sequence[Task], steps: Steps, *, greedy: bool,
               few_shot: bool, seed: int = 0, n: int = 1, prefix: str = "") -> list[Trajectory]:
    """Episodes of `policy` from the start of each task (episode id: `prefix` + task id)."""
    starts = [Start(f"{prefix}{task.id}", task) for task in tasks]
    return rollout(environment, policy, starts, greedy=greedy, few_shot=few_shot, n=n, seed=seed,
                   max_steps=int(steps.max_steps), max_new_tokens=int(steps.max_new_tokens), progress=True)


def trajectories_from_programs(environment: Any, tasks: Sequence[Task], programs: Sequence[str],
                               episode_ids: Sequence[str]) -> list[Trajectory]:
    """Whole programs as step-mode trajectories: each prefix of its actions replayed for the page it leaves.

    This is how a whole-program run's solutions become expert (IPR) or reference (VERTEX_DTW)
    trajectories. The steps carry no thought (the programs had none to give). A program the
    environment cannot split into steps is left out.
    """
    jobs: list[tuple[int, list[str]]] = []
    for index, program in enumerate(programs):
        try:
            jobs.append((index, environment.program_steps(program)))
        except Exception as error:  # noqa: BLE001 - a refused program has no steps; it is counted, not fatal
            log.info("program of %s left out: %s", episode_ids[index], error)
    prefixes = [(index, actions[: end + 1]) for index, actions in jobs for end in range(len(actions))]
    outcomes = environment.replay([tasks[index] for index, _ in prefixes], [history for _, history in prefixes])
    after: dict[tuple[int, int], Any] = {(index, len(history)): outcome
                                         for (index, history), outcome in zip(prefixes, outcomes)}
    trajectories = []
    for index, actions in jobs:
        steps: list[Step] = []
        observation = tasks[index].question
        for position, action in enumerate(actions, start=1):
            outcome = after[(index, position)]
            steps.append(Step(observation, "", action, float(outcome.reward), bool(outcome.done), outcome.error_class))
            observation = outcome.observation
            if outcome.done:
                break
        trajectories.append(Trajectory(episode_ids[index], tasks[index], tuple(steps)))
    return trajectories


def source_trajectories(config: dict[str, Any], run: str, program_paths: Sequence[str], program_schema: str,
                        task_paths: Sequence[str], out: str) -> None:
    """Successful trajectories for the run's tasks: expert demonstrations (IPR) or references (VERTEX_DTW).

    From `agent_source.run`: its successful whole programs (pool rows or eval rows with b = 1),
    each distinct program once, replayed step by step; or, with `agent_source.teacher`, the
    teacher endpoint acting in step mode on the tasks (greedy). Only trajectories that
    succeed when replayed here are kept.
    """
    settings = settings_for(AgentSourceSettings, config, run)
    environment = settings.train_environment()
    tasks = {task.id: task for path in task_paths for task in task_list(art.read_table(path, art.TASKS))}
    if settings.agent_source.teacher:
        teacher = settings.teacher
        policy = OpenAIChatBackend(teacher["base_url"], teacher["model"], api_key_env=teacher["api_key_env"],
                                   cache_dir=teacher["cache_dir"], concurrency=int(teacher["concurrency"]))
        trajectories = run_policy(environment, policy, list(tasks.values()), settings.steps, greedy=True,
                                  few_shot=bool(settings.steps.few_shot))
    else:
        schema = {"pool": art.POOL, "eval": art.EVAL}[program_schema]
        frames = [art.read_table(path, schema) for path in program_paths]
        solved = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=schema.names)
        solved = solved[(solved["b"] == 1) & solved["id"].isin(tasks.keys()) & (solved["program"].str.strip() != "")]
        solved = solved.drop_duplicates(["id", "program"]).sort_values(["id", "program"], kind="stable")
        counts: Counter[str] = Counter()
        episode_ids = []
        for task_id in solved["id"]:
            episode_ids.append(f"{task_id}/{counts[task_id]}")
            counts[task_id] += 1
        trajectories = trajectories_from_programs(environment, [tasks[i] for i in solved["id"]],
                                                  list(solved["program"]), episode_ids)
    threshold = success_threshold(environment)
    kept = [t for t in trajectories if is_solved(t, threshold)]
    log.info("%s: %d successful trajectories for %d of %d tasks (%d candidates)", out, len(kept),
             len({t.task.id for t in kept}), len(tasks), len(trajectories))
    art.write_table(trajectory_rows(kept), out, art.TRAJECTORIES)


def read_trajectories(path: str) -> list[Trajectory]:
    """A TRAJECTORIES file as trajectories (each task rebuilt from its id and first observation)."""
    return trajectories_from_frame(art.read_table(path, art.TRAJECTORIES))


def outcome_summary(trajectories: Sequence[Trajectory], threshold: float) -> dict[str, Any]:
    """Success rate, mean final reward and how episodes ended, over all and per task family (Task.answer)."""
    success = [int(is_solved(t, threshold)) for t in trajectories]
    per_task: dict[str, dict[str, Any]] = {}
    for trajectory, solved in zip(trajectories, success):
        entry = per_task.setdefault(trajectory.task.answer or trajectory.task.id.split(":")[0], {"n": 0, "correct": 0})
        entry["n"] += 1
        entry["correct"] += solved
    for entry in per_task.values():
        entry["success"] = entry["correct"] / entry["n"]
    return {"accuracy": mean(success), "n": len(success), "correct": sum(success),
            "average_final_reward": mean([t.final_reward for t in trajectories]),
            "average_steps": mean([len(t.steps) for t in trajectories]),
            "outcomes": dict(Counter((t.steps[-1].error_class if t.steps else "no_steps") or "correct"
                                     for t in trajectories)),
            "per_task": dict(sorted(per_task.items()))}


def write_trajectories(trajectories: Sequence[Trajectory], out: str) -> None:
    art.write_table(trajectory_rows(trajectories), out, art.TRAJECTORIES)


def agent_evaluate(config: dict[str, Any], run: str, iteration: int, model_dir: str, testsets: Sequence[str],
                   test_paths: Sequence[str], out_json: str, out_parquet: str, scorer: str | None = None,
                   references: str | None = None) -> None:
    """Greedy step-mode episodes of the policy on every test set, and the method's metrics.

    All runs: success rate (`accuracy`: final reward at least the environment's threshold),
    average final reward and steps. IPR adds the Monte Carlo average step reward of each test
    trajectory under its SFT scorer (the paper's Fig. 4); a mixture run adds the capability
    score and VERTEX_DTW against its references, with bootstrap intervals (mixture paper Table 3).
    The untrained base model (a mixture run's iteration 0) is shown the worked episode first.
    """
    from envisions_flow.stages.ipr import ipr_step_reward  # here: both import this module
    from envisions_flow.stages.mixture import mixture_metrics

    settings = settings_for(AgentEvaluateSettings, config, run)
    domain, run_name = parse_run_dir(run)
    method = settings.method
    steps = settings.steps
    few_shot = bool(steps.few_shot) and method == "mixture" and iteration == 0
    scores_steps = method == "ipr" and settings.ipr.eval_step_reward and scorer
    policy = backend_for(settings.generation, model_dir,
                         engines=models_in_process(scorer if scores_steps else None, model_dir))
    summary: dict[str, Any] = {}
    everything: list[Trajectory] = []
    for name, path in zip(testsets, test_paths):
        spec = with_preset(dict(settings.testsets[name]))
        environment = settings.environment.make(name, spec)
        tasks = task_list(art.read_table(path, art.TASKS))
        trajectories = run_policy(environment, policy, tasks, steps, greedy=True, few_shot=few_shot,
                                  prefix=f"{name}/")
        entry = outcome_summary(trajectories, success_threshold(environment))
        entry["held_in"] = bool(spec.get("held_in", True))
        if scores_steps:
            entry.update(ipr_step_reward(settings, environment, policy, model_dir, scorer, trajectories, iteration))
        if method == "mixture" and references:
            entry.update(mixture_metrics(settings, environment, tasks, trajectories, references))
        summary[name] = entry
        everything += trajectories
        log.info("%s %s: success %.3f, final reward %.3f on %d", out_json, name, entry["accuracy"],
                 entry["average_final_reward"], entry["n"])
    write_trajectories(everything, out_parquet)
    report: dict[str, Any] = {"domain": domain, "run": run_name, "method": method, "iteration": iteration,
                              "model": str(model_dir), "testsets": summary,
                              "average": mean([entry["accuracy"] for entry in summary.values()]),
                              "average_final_reward": mean([e["average_final_reward"] for e in summary.values()])}
    if method == "ipr" and all("average_step_reward" in entry for entry in summary.values()):
        report["average_step_reward"] = mean([entry["average_step_reward"] for entry in summary.values()])
    art.write_json(report, out_json)


def step_conversations(environment: Any, trajectories: Sequence[Trajectory]) -> list[Any]:
    return [react_messages(environment, trajectory.steps) for trajectory in trajectories]


def agent_summary(eval_paths: Sequence[str], out_md: str) -> None:
    """A Markdown table of an agent run: per iteration and test set, success, final reward and its metrics."""
    import json
    from pathlib import Path

    metrics = ("accuracy", "average_final_reward", "average_step_reward", "capability_score", "vertex_dtw",
               "average_steps")
    rows = []
    for path in eval_paths:
        report = json.loads(Path(path).read_text())
        for name, entry in report["testsets"].items():
            rows.append({"iteration": report["iteration"], "test set": name, "n": entry["n"],
                         **{key: round(float(entry[key]), 4) for key in metrics if entry.get(key) is not None}})
    frame = pd.DataFrame(rows)
    title = f"# {Path(out_md).parent} (step mode)\n\n" if eval_paths else ""
    art.write_text(title + frame.to_markdown(index=False) + "\n", out_md)
