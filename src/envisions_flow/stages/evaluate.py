"""Evaluation: greedy accuracy per test set, with inference-time self-refinement where configured.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

from envisions_flow.datasets.loaders import with_preset
from envisions_flow.generation.base import Generation
from envisions_flow.stages.common import backend_for, mean, more_turns, task_list
from envisions_flow.stages.settings import EvaluateSettings, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.runs import method_of, parse_run_dir

log = logging.getLogger("envisions_flow")


# Error classes of programs that ran to the end (web: the episode also ended too slowly, or not at all).
EXECUTED = {"", "wrong_answer", "no_answer", "judge_timeout", "too_slow", "not_done"}


def evaluate(config: dict[str, Any], run: str, iteration: int, model_dir: str, testsets: Sequence[str],
             test_paths: Sequence[str], out_json: str, out_parquet: str) -> None:
    """Greedy accuracy per test set (zero-shot; few-shot for iteration 0, the untrained base model).

    With eval.self_refine, each prediction also gets one greedy refine pass
    (inference-time self-refinement, paper Table 8) and both accuracies are reported.
    """
    settings = settings_for(EvaluateSettings, config, run)
    domain = parse_run_dir(run)[0]
    self_refine = bool(settings.eval.self_refine)
    max_new_tokens = int(settings.eval.max_new_tokens)
    backend = backend_for(settings.generation, model_dir)
    environments, task_lists, specs = [], [], []
    for name, path in zip(testsets, test_paths):
        specs.append(with_preset(dict(settings.testsets[name])))
        environments.append(settings.environment.make(name, specs[-1]))
        task_lists.append(task_list(art.read_table(path, art.TASKS)))

    def greedy(conversations: list[list[Any]]) -> list[list[Generation]]:
        """Every test set's first turn in one decoding call (fewer, fuller batches than one call per set),
        then each set's further turns."""
        flat = backend.greedy([backend.render(messages) for part in conversations for messages in part],
                              max_new_tokens)
        replies, start = [], 0
        for environment, tasks, part in zip(environments, task_lists, conversations):
            replies.append(more_turns(environment, backend, tasks, part, flat[start : start + len(part)],
                                      lambda more, turn: backend.greedy(more, max_new_tokens)))
            start += len(part)
        return replies

    explored = greedy([[environment.explore_prompt(task, few_shot=iteration == 0) for task in tasks]
                       for environment, tasks in zip(environments, task_lists)])
    programs = [[environment.extract_program(generation.text) for generation in generations]
                for environment, generations in zip(environments, explored)]
    refined_programs: list[list[str | None]] = [[None] * len(tasks) for tasks in task_lists]
    if self_refine:
        refined = greedy([[environment.refine_prompt(task, program) for task, program in zip(tasks, part)]
                          for environment, tasks, part in zip(environments, task_lists, programs)])
        refined_programs = [[environment.extract_program(generation.text) for generation in generations]
                            for environment, generations in zip(environments, refined)]
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name, spec, environment, tasks, generations, part, refined_part in zip(
            testsets, specs, environments, task_lists, explored, programs, refined_programs):
        results = environment.execute(tasks, part)
        refined_b: list[int | None] = [None] * len(tasks)
        if self_refine:
            refined_b = [result.b for result in environment.execute(tasks, refined_part)]
        for task, generation, program, result, refined_program, b_refined in zip(tasks, generations, part, results,
                                                                                 refined_part, refined_b):
            rows.append({"testset": name, "id": task.id, "question": task.question, "answer": task.answer,
                         "completion": generation.text, "program": program, "value": result.value, "b": result.b,
                         "error_class": result.error_class, "refined_program": refined_program,
                         "refined_b": b_refined})
        classes = Counter(result.error_class or "correct" for result in results)
        executable = sum(result.error_class in EXECUTED for result in results)
        summary[name] = {"accuracy": sum(result.b for result in results) / len(results), "n": len(results),
                         "correct": sum(result.b for result in results), "executable_rate": executable / len(results),
                         "held_in": bool(spec.get("held_in", True)), "outcomes": dict(classes)}
        if self_refine:
            summary[name]["accuracy_self_refined"] = sum(refined_b) / len(results)
        metrics = getattr(environment, "testset_metrics", None)  # an environment's own (web: success per task)
        if metrics is not None:
            summary[name].update(metrics(tasks, results))
        log.info("%s %s: accuracy %.3f on %d", out_json, name, summary[name]["accuracy"], len(results))
    art.write_table(rows, out_parquet, art.EVAL)
    run_name = parse_run_dir(run)[1]
    # the run and method that computed it: a label, not a setting (a shared iteration-0 eval names the first run)
    report: dict[str, Any] = {"domain": domain, "run": run_name, "method": method_of(config, run_name),
                              "iteration": iteration, "model": str(model_dir), "testsets": summary,
                              "average": mean([entry["accuracy"] for entry in summary.values()])}
    if self_refine:
        report["average_self_refined"] = mean([entry["accuracy_self_refined"] for entry in summary.values()])
    for metric in getattr(environment, "averaged_metrics", ()):
        report[f"average_{metric}"] = mean([entry[metric] for entry in summary.values()])
    art.write_json(report, out_json)
