"""Stages of the agent runs (IPR and the synthetic mixtures), called by the scripts of rules/agents.smk,
rules/ipr.smk and rules/mixture.smk.

They share the whole-program pipeline's parts rather than copying it: the environment
(here in step mode, agents.StepEnvironment), the generation backend, the trainer
(training.py) and the Parquet artifacts; what is new is the step-level data each method
builds (ipr.py, mixture.py) and the metrics (agent_metrics.py).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, Sequence

import pandas as pd

from . import artifacts as art
from .agents import Start, Step, Trajectory, react_messages, rollout, trajectories_from_frame, trajectory_rows
from .config import dataset_spec
from .environments import make_environment
from .environments.base import Task
from .generation import OpenAIChatBackend
from .runs import method_of, parse_run_dir
from .stages import _backend, _mean, _seed, _settings, _tasks

log = logging.getLogger("envisions_flow")


def step_environment(config: dict[str, Any], run: str, dataset: str = "train") -> Any:
    """The run's environment for one dataset; agent runs use its step mode (`replay`)."""
    domain = parse_run_dir(run)[0]
    return make_environment(domain, _settings(config, run), dataset_spec(config, domain, dataset))


def _steps(config: dict[str, Any], run: str) -> dict[str, Any]:
    return _settings(config, run)["steps"]


def _solved(trajectory: Trajectory, threshold: float) -> bool:
    """Success: the episode ended with a final reward of at least the threshold."""
    return trajectory.finished and trajectory.final_reward >= threshold


def _scorer(config: dict[str, Any], scorer_dir: str, policy: Any, policy_dir: str) -> Any:
    """IPR's frozen scorer: the policy's own backend when both are the same checkpoint (one model in memory)."""
    return policy if str(scorer_dir) == str(policy_dir) else _backend(config, scorer_dir)


def _threshold(environment: Any) -> float:
    """The final reward that counts as success (the environment's, else any reward at all)."""
    return float(getattr(environment, "reward_threshold", 1e-9))


def run_policy(environment: Any, policy: Any, tasks: Sequence[Task], steps: dict[str, Any], *, greedy: bool,
               few_shot: bool, seed: int = 0, n: int = 1, prefix: str = "") -> list[Trajectory]:
    """Episodes of `policy` from the start of each task (episode id: `prefix` + task id)."""
    starts = [Start(f"{prefix}{task.id}", task) for task in tasks]
    return rollout(environment, policy, starts, greedy=greedy, few_shot=few_shot, n=n, seed=seed,
                   max_steps=int(steps["max_steps"]), max_new_tokens=int(steps["max_new_tokens"]), progress=True)


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
    settings = _settings(config, run)
    environment = step_environment(config, run)
    tasks = {task.id: task for path in task_paths for task in _tasks(art.read_table(path, art.TASKS))}
    if settings["agent_source"]["teacher"]:
        teacher = settings["teacher"]
        policy = OpenAIChatBackend(teacher["base_url"], teacher["model"], api_key_env=teacher["api_key_env"],
                                   cache_dir=teacher["cache_dir"], concurrency=int(teacher["concurrency"]))
        trajectories = run_policy(environment, policy, list(tasks.values()), settings["steps"], greedy=True,
                                  few_shot=bool(settings["steps"]["few_shot"]))
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
    threshold = _threshold(environment)
    kept = [t for t in trajectories if _solved(t, threshold)]
    log.info("%s: %d successful trajectories for %d of %d tasks (%d candidates)", out, len(kept),
             len({t.task.id for t in kept}), len(tasks), len(trajectories))
    art.write_table(trajectory_rows(kept), out, art.TRAJECTORIES)


def read_trajectories(path: str) -> list[Trajectory]:
    """A TRAJECTORIES file as trajectories (each task rebuilt from its id and first observation)."""
    return trajectories_from_frame(art.read_table(path, art.TRAJECTORIES))


def outcome_summary(trajectories: Sequence[Trajectory], threshold: float) -> dict[str, Any]:
    """Success rate, mean final reward and how episodes ended, over all and per task family (Task.answer)."""
    success = [int(_solved(t, threshold)) for t in trajectories]
    per_task: dict[str, dict[str, Any]] = {}
    for trajectory, solved in zip(trajectories, success):
        entry = per_task.setdefault(trajectory.task.answer or trajectory.task.id.split(":")[0], {"n": 0, "correct": 0})
        entry["n"] += 1
        entry["correct"] += solved
    for entry in per_task.values():
        entry["success"] = entry["correct"] / entry["n"]
    return {"accuracy": _mean(success), "n": len(success), "correct": sum(success),
            "average_final_reward": _mean([t.final_reward for t in trajectories]),
            "average_steps": _mean([len(t.steps) for t in trajectories]),
            "outcomes": dict(Counter((t.steps[-1].error_class if t.steps else "no_steps") or "correct"
                                     for t in trajectories)),
            "per_task": dict(sorted(per_task.items()))}


def _write_trajectories(trajectories: Sequence[Trajectory], out: str) -> None:
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
    settings = _settings(config, run)
    domain, run_name = parse_run_dir(run)
    method = method_of(config, run_name)
    steps = settings["steps"]
    few_shot = bool(steps["few_shot"]) and method == "mixture" and iteration == 0
    policy = _backend(config, model_dir)
    summary: dict[str, Any] = {}
    everything: list[Trajectory] = []
    for name, path in zip(testsets, test_paths):
        environment = step_environment(config, run, name)
        tasks = _tasks(art.read_table(path, art.TASKS))
        trajectories = run_policy(environment, policy, tasks, steps, greedy=True, few_shot=few_shot,
                                  prefix=f"{name}/")
        entry = outcome_summary(trajectories, _threshold(environment))
        entry["held_in"] = bool(dataset_spec(config, domain, name).get("held_in", True))
        if method == "ipr" and settings["ipr"]["eval_step_reward"] and scorer:
            entry.update(_ipr_step_reward(config, settings, environment, policy, model_dir, scorer, trajectories,
                                          iteration))
        if method == "mixture" and references:
            entry.update(_mixture_metrics(config, settings, environment, tasks, trajectories, references))
        summary[name] = entry
        everything += trajectories
        log.info("%s %s: success %.3f, final reward %.3f on %d", out_json, name, entry["accuracy"],
                 entry["average_final_reward"], entry["n"])
    _write_trajectories(everything, out_parquet)
    report: dict[str, Any] = {"domain": domain, "run": run_name, "method": method, "iteration": iteration,
                              "model": str(model_dir), "testsets": summary,
                              "average": _mean([entry["accuracy"] for entry in summary.values()]),
                              "average_final_reward": _mean([e["average_final_reward"] for e in summary.values()])}
    if method == "ipr" and all("average_step_reward" in entry for entry in summary.values()):
        report["average_step_reward"] = _mean([entry["average_step_reward"] for entry in summary.values()])
    art.write_json(report, out_json)


def _ipr_step_reward(config: dict[str, Any], settings: dict[str, Any], environment: Any, policy: Any,
                     model_dir: str, scorer_dir: str, trajectories: Sequence[Trajectory],
                     iteration: int) -> dict[str, Any]:
    """The mean Monte Carlo step reward of each test trajectory's actions under the frozen SFT scorer."""
    from .ipr import mean_step_rewards

    scorer = _scorer(config, scorer_dir, policy, model_dir)
    steps = settings["steps"]
    rewards = mean_step_rewards(environment, scorer, trajectories, n_rollouts=int(settings["ipr"]["mc_rollouts"]),
                                max_steps=int(steps["max_steps"]), max_new_tokens=int(steps["max_new_tokens"]),
                                seed=_seed(config, iteration, 7))
    return {"average_step_reward": _mean(rewards)}


# ---- IPR ----------------------------------------------------------------------------------------------

def _conversations(environment: Any, trajectories: Sequence[Trajectory]) -> list[Any]:
    return [react_messages(environment, trajectory.steps) for trajectory in trajectories]


def ipr_sft(config: dict[str, Any], run: str, base_model: str, experts_path: str, out: str) -> None:
    """The base agent: SFT on the expert trajectories, loss on the agent's turns only (paper Eq. 2)."""
    from .training import _tokenizer, train_trajectories, trajectory_example

    settings = _settings(config, run)
    experts = read_trajectories(experts_path)
    if not experts:
        raise ValueError(f"{experts_path}: no expert trajectories to fine-tune on (agent_source "
                         f"{settings['agent_source']} solved none of the training tasks)")
    environment = step_environment(config, run)
    tokenizer = _tokenizer(base_model)
    examples = [trajectory_example(tokenizer, messages) for messages in _conversations(environment, experts)]
    metrics = train_trajectories(base_model, examples, settings["training"], out)
    log.info("%s: SFT on %d expert trajectories: %s", out, len(experts), metrics.get("train_loss"))


def ipr_explore(config: dict[str, Any], run: str, iteration: int, policy_dir: str, scorer_dir: str,
                experts_path: str, out_steps: str, out_pairs: str) -> None:
    """Step rewards along every expert trajectory and the contrastive pairs they give (paper §3.2-3.3)."""
    from .ipr import contrastive_pairs, explore_expert

    settings = _settings(config, run)
    ipr, steps = settings["ipr"], settings["steps"]
    environment = step_environment(config, run)
    experts = read_trajectories(experts_path)
    policy = _backend(config, policy_dir)
    scorer = _scorer(config, scorer_dir, policy, policy_dir)
    rows = explore_expert(environment, policy, scorer, experts, n_rollouts=int(ipr["mc_rollouts"]),
                          max_steps=int(steps["max_steps"]), max_new_tokens=int(steps["max_new_tokens"]),
                          seed=_seed(config, iteration, 5))
    art.write_table(rows, out_steps, art.IPR_STEPS)
    pairs = contrastive_pairs(environment, rows, experts, float(ipr["tau"]),
                              both_directions=ipr["pairs"] == "both_directions")
    art.write_table(pairs, out_pairs, art.IPR_PAIRS)
    kinds = Counter(pair["kind"] for pair in pairs)
    log.info("%s: %d step rewards along %d expert trajectories; %d outcome and %d step pairs", out_pairs,
             len(rows), len(experts), kinds["outcome"], kinds["step"])


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


def ipr_train(config: dict[str, Any], run: str, iteration: int, policy_dir: str, reference_dir: str,
              pairs_path: str, out: str) -> None:
    """The previous agent trained on this iteration's pairs, the SFT agent as the DPO reference (paper §3.3)."""
    from .training import train_ipr

    settings = _settings(config, run)
    ipr = settings["ipr"]
    pairs = art.read_table(pairs_path, art.IPR_PAIRS).to_dict("records")
    training = {**settings["training"], "learning_rate": float(ipr["learning_rate"]), "epochs": float(ipr["epochs"]),
                "lr_scheduler": "cosine"}
    metrics = train_ipr(policy_dir, reference_dir, pairs, training, out, float(ipr["beta"]), sft_on=ipr["sft_on"],
                        losses=tuple(ipr["losses"]))
    log.info("%s: %d outcome and %d step pairs", out, metrics["outcome_pairs"], metrics["step_pairs"])


# ---- synthetic mixtures --------------------------------------------------------------------------

EMBEDDING_CACHE = "results/embedding_cache"


def _embedder(settings: dict[str, Any]) -> Any:
    from .mixture import Embedder

    return Embedder(settings["mixture"]["embedding_model"], EMBEDDING_CACHE)


_VALUES = re.compile(r'"[^"]*"|“[^”]*”|\'[^\']*\'|\b\d+(?:\.\d+)?\b')


def template_of(objective: str) -> str:
    """A task's intent template: its objective with quoted values and numbers masked ("Click on {x}.")."""
    return _VALUES.sub("{x}", objective)


def _step_text(step: Step) -> str:
    """What VERTEX_DTW embeds of a step, f(o_t, a_t): the action first, so a long page cannot truncate it away."""
    return f"{step.action}\n{step.observation}"


def _mixture_metrics(config: dict[str, Any], settings: dict[str, Any], environment: Any, tasks: Sequence[Task],
                     trajectories: Sequence[Trajectory], references_path: str) -> dict[str, Any]:
    """Functional correctness, capability score and VERTEX_DTW with bootstrap intervals (mixture paper §3).

    The trivial agent is a real episode with no action: tasks it solves do not count towards a
    capability, and its VERTEX_DTW (one step: the first page, no action) is each task's baseline,
    so doing nothing scores 0.
    """
    from .agent_metrics import capability_groups, capability_score, metric_summary, trivial_baseline, vertex_dtw
    from .mixture import objective_of

    mixture = settings["mixture"]
    embedder = _embedder(settings)
    threshold = _threshold(environment)
    success = [_solved(t, threshold) for t in trajectories]
    trivial = [o.done and o.reward >= threshold for o in environment.replay(tasks, [[] for _ in tasks])]
    templates = [template_of(objective_of(task.question)) for task in tasks]
    groups = capability_groups(embedder.encode(templates), float(mixture["capability_similarity"]))
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
    summary = metric_summary(success, trivial, groups, vertex, samples=int(mixture["bootstrap_samples"]),
                             seed=int(config["generation"]["seed"]))
    summary["trivial"] = {"accuracy": _mean([float(t) for t in trivial]),
                          "capability_score": capability_score(groups, trivial, trivial)}
    return summary


def mixture_indomain(config: dict[str, Any], run: str, iteration: int, policy_dir: str, tasks_path: str,
                     out: str, out_summary: str) -> None:
    """The policy's own episodes on the training tasks, filtered without labels (in-domain data).

    The summary also says how the kept and dropped episodes actually ended (the paper's Table 1
    measures its filter that way); the filter itself never reads a reward.
    """
    from .mixture import filter_trajectories

    settings = _settings(config, run)
    environment = step_environment(config, run)
    tasks = _tasks(art.read_table(tasks_path, art.TASKS))
    untrained = iteration == 1
    trajectories = run_policy(environment, _backend(config, policy_dir), tasks, settings["steps"], greedy=False,
                              few_shot=bool(settings["steps"]["few_shot"]) and untrained,
                              n=int(settings["mixture"]["samples_per_task"]), seed=_seed(config, iteration, 11))
    kept, dropped = filter_trajectories(trajectories)
    threshold = _threshold(environment)
    solved = {t.episode_id for t in trajectories if _solved(t, threshold)}
    _write_trajectories(kept, out)
    art.write_json({"trajectories": len(trajectories), "kept": len(kept), "dropped": dropped,
                    "kept_successful": sum(t.episode_id in solved for t in kept),
                    "dropped_successful": len(solved) - sum(t.episode_id in solved for t in kept)}, out_summary)
    log.info("%s: kept %d of %d episodes (dropped: %s)", out, len(kept), len(trajectories), dropped)


def mixture_synthetic(config: dict[str, Any], run: str, iteration: int, policy_dir: str, indomain_path: str,
                      out: str, out_summary: str) -> None:
    """Out-of-domain tasks with hypothetical trajectories, kept below the similarity threshold."""
    from .mixture import objective_of, synthesize

    settings = _settings(config, run)
    mixture = settings["mixture"]
    indomain = read_trajectories(indomain_path)
    objectives = [objective_of(t.task.question) for t in indomain]
    synthetic, counts = synthesize(_backend(config, policy_dir), indomain, objectives, _embedder(settings),
                                   int(mixture["synthetic_tasks"]), int(mixture["synthetic_attempts"]),
                                   float(mixture["similarity_threshold"]),
                                   4 * int(settings["steps"]["max_new_tokens"]), _seed(config, iteration, 13))
    _write_trajectories(synthetic, out)
    art.write_json(counts, out_summary)
    log.info("%s: %s", out, counts)


def mixture_train(config: dict[str, Any], run: str, iteration: int, init_model: str, indomain_path: str | None,
                  synthetic_path: str | None, out: str) -> None:
    """LoRA fine-tuning on the run's mixture: balanced single-step examples of its trajectories."""
    from .mixture import balanced_steps, step_conversation
    from .training import _tokenizer, train_trajectories, trajectory_example

    settings = _settings(config, run)
    environment = step_environment(config, run)
    trajectories = [t for path in (indomain_path, synthetic_path) if path for t in read_trajectories(path)]
    tokenizer = _tokenizer(init_model)
    examples = []
    for trajectory, index in balanced_steps(trajectories, int(settings["training"]["seed"]) + iteration):
        messages, trained = step_conversation(environment, trajectory, index)
        examples.append(trajectory_example(tokenizer, messages, trained))
    metrics = train_trajectories(init_model, examples, settings["training"], out, lora=settings["mixture"]["lora"])
    log.info("%s: %d step examples from %d trajectories", out, metrics["train_examples"], len(trajectories))
