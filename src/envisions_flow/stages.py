"""One function per workflow stage: read typed artifacts, do the work, write typed artifacts.

The Snakemake scripts are one-line calls into these functions, so every stage
can also be run (and tested) from Python.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import artifacts as art
from .config import dataset_key, dataset_spec, domain_settings
from .datasets import load_tasks
from .environments import Environment, Task, make_environment
from .generation import Generation, load_backend
from .selection import filter_trajectories, select_training_sets, update_pool

log = logging.getLogger("envisions_flow")


def _tasks(frame: pd.DataFrame) -> list[Task]:
    return [Task(row.id, row.question, row.answer) for row in frame.itertuples()]


def _environment(config: dict[str, Any], domain: str, dataset: str = "train") -> Environment:
    """The domain's environment, set up for one dataset (answer type, world assumption)."""
    return make_environment(domain, domain_settings(config, domain), dataset_spec(config, domain, dataset))


def _backend(config: dict[str, Any], model_dir: str | Path):
    generation = config["generation"]
    return load_backend(generation["backend"], model_dir, batch_size=int(generation["batch_size"]),
                        dtype=generation["dtype"])


def _seed(config: dict[str, Any], iteration: int, stage: int) -> int:
    return int(config["generation"]["seed"]) * 1_000_003 + iteration * 101 + stage


def _generation_row(task: Any, sample_idx: int, prompt: str, generation: Generation, environment: Environment,
                    source_program: str = "") -> dict[str, Any]:
    """One row of the GENERATIONS schema."""
    return {"id": task.id, "sample_idx": sample_idx, "question": task.question, "answer": task.answer,
            "prompt": prompt, "completion": generation.text, "program": environment.extract_program(generation.text),
            "n_tokens": generation.n_tokens, "logprob_sum": generation.logprob_sum,
            "self_reward": generation.self_reward, "source_program": source_program}


def prepare_data(config: dict[str, Any], domain: str, name: str, out: str | Path) -> None:
    spec = dataset_spec(config, domain, name)
    frame = load_tasks(spec, dataset_key(domain, name), domain)
    art.write_table(frame, out, art.TASKS)
    log.info("%s: %d tasks from %s", out, len(frame), spec.get("kind"))


def explore(config: dict[str, Any], domain: str, iteration: int, tasks_path: str, model_dir: str, out: str) -> None:
    """Self-exploration: K samples per input with their self-rewards (Steps 1 and 7)."""
    settings = domain_settings(config, domain)
    tasks = art.read_table(tasks_path, art.TASKS)
    environment = _environment(config, domain)
    few_shot = iteration <= int(settings["explore"]["few_shot_iterations"])
    backend = _backend(config, model_dir)
    prompts = [backend.render(environment.explore_prompt(task, few_shot)) for task in _tasks(tasks)]
    k = int(settings["explore"]["k"])
    started = time.monotonic()
    samples = backend.sample(prompts, k, int(settings["explore"]["max_new_tokens"]), _seed(config, iteration, 1))
    rows = [_generation_row(task, index, prompt, generation, environment)
            for task, prompt, generations in zip(tasks.itertuples(), prompts, samples)
            for index, generation in enumerate(generations)]
    art.write_table(rows, out, art.GENERATIONS)
    tokens = sum(row["n_tokens"] for row in rows)
    log.info("%s: %d samples (%d few-shot=%s), %d tokens in %.0f s", out, len(rows), len(tasks), few_shot, tokens,
             time.monotonic() - started)


def refine(config: dict[str, Any], domain: str, iteration: int, samples_path: str, model_dir: str, out: str) -> None:
    """Self-refinement: one refined program per sample, written from (x, a_k) (Steps 4 and 7)."""
    settings = domain_settings(config, domain)
    samples = art.read_table(samples_path, art.GENERATIONS)
    environment = _environment(config, domain)
    backend = _backend(config, model_dir)
    prompts = [backend.render(environment.refine_prompt(Task(row.id, row.question, row.answer), row.program))
               for row in samples.itertuples()]
    started = time.monotonic()
    generations = backend.sample(prompts, 1, int(settings["refine"]["max_new_tokens"]), _seed(config, iteration, 2))
    rows = [_generation_row(row, row.sample_idx, prompt, generation, environment, source_program=row.program)
            for row, prompt, (generation,) in zip(samples.itertuples(), prompts, generations)]
    art.write_table(rows, out, art.GENERATIONS)
    log.info("%s: %d refinements in %.0f s", out, len(rows), time.monotonic() - started)


def execute(config: dict[str, Any], domain: str, generations_path: str, out: str) -> None:
    """Run every program in the environment: binary reward b and error class (Steps 2-3 and 5-6)."""
    generations = art.read_table(generations_path, art.GENERATIONS)
    environment = _environment(config, domain)
    tasks = [Task(row.id, row.question, row.answer) for row in generations.itertuples()]
    results = environment.execute(tasks, list(generations["program"]))
    rows = [{"id": row.id, "sample_idx": row.sample_idx, "b": result.b, "value": result.value,
             "error_class": result.error_class, "duration_s": result.duration_s}
            for row, result in zip(generations.itertuples(), results)]
    art.write_table(rows, out, art.EXECUTIONS)
    classes = Counter(result.error_class or "correct" for result in results)
    log.info("%s: %d programs, %s", out, len(rows), dict(classes))


def _judged(generations_path: str, executions_path: str) -> pd.DataFrame:
    generations = art.read_table(generations_path, art.GENERATIONS)
    executions = art.read_table(executions_path, art.EXECUTIONS)
    return generations.merge(executions[["id", "sample_idx", "b"]], on=["id", "sample_idx"], validate="one_to_one")


def build_pool(config: dict[str, Any], domain: str, iteration: int, previous_pool: str | None, samples: str,
               samples_exec: str, refinements: str, refinements_exec: str, out: str) -> None:
    """Eq. 2 per (x, k), then the pool of the previous iteration plus the chosen trajectories."""
    environment = _environment(config, domain)
    columns = ["id", "sample_idx", "question", "answer", "program", "b", "self_reward"]
    chosen = filter_trajectories(_judged(samples, samples_exec)[columns],
                                 _judged(refinements, refinements_exec)[columns], iteration)
    previous = art.read_table(previous_pool, art.POOL) if previous_pool else None
    pool = update_pool(previous, chosen, environment.program_key)
    art.write_table(pool, out, art.POOL)
    log.info("%s: %d trajectories (%d positive), %d refined chosen this iteration", out, len(pool),
             int((pool["b"] == 1).sum()), int((chosen["origin"] == "refine").sum()))


def select(config: dict[str, Any], domain: str, pool_path: str, out_u1: str, out_u2: str) -> None:
    """U1 (Eq. 3) and U2 (Eq. 5) from the pool."""
    selection = domain_settings(config, domain)["selection"]
    pool = art.read_table(pool_path, art.POOL)
    u1, u2 = select_training_sets(pool, int(selection["n1"]), int(selection["n2"]), selection["u1_rule"])
    art.write_table(u1, out_u1, art.U1)
    art.write_table(u2, out_u2, art.U2)
    log.info("%s: %d positives for %d inputs; %s: %d pairs", out_u1, len(u1), u1["id"].nunique(), out_u2, len(u2))


def train(config: dict[str, Any], domain: str, base_model: str, u1_path: str, u2_path: str, out: str) -> None:
    """Train the base model from scratch on L1 + L2."""
    from transformers import AutoTokenizer

    from .training import build_examples, train as run_training

    settings = domain_settings(config, domain)
    environment = _environment(config, domain)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    examples = build_examples(art.read_table(u1_path, art.U1), art.read_table(u2_path, art.U2), environment,
                              tokenizer)
    metrics = run_training(base_model, examples, settings["training"], out)
    log.info("%s: trained on %d examples: %s", out, len(examples), metrics)


def evaluate(config: dict[str, Any], domain: str, iteration: int, model_dir: str, testsets: Sequence[str],
             test_paths: Sequence[str], out_json: str, out_parquet: str) -> None:
    """Greedy accuracy per test set (zero-shot; few-shot for iteration 0, the untrained base model)."""
    settings = domain_settings(config, domain)
    backend = _backend(config, model_dir)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name, path in zip(testsets, test_paths):
        spec = dataset_spec(config, domain, name)
        environment = _environment(config, domain, name)
        tasks = _tasks(art.read_table(path, art.TASKS))
        prompts = [backend.render(environment.explore_prompt(task, few_shot=iteration == 0)) for task in tasks]
        generations = backend.greedy(prompts, int(settings["eval"]["max_new_tokens"]))
        programs = [environment.extract_program(generation.text) for generation in generations]
        results = environment.execute(tasks, programs)
        for task, generation, program, result in zip(tasks, generations, programs, results):
            rows.append({"testset": name, "id": task.id, "question": task.question, "answer": task.answer,
                         "completion": generation.text, "program": program, "value": result.value, "b": result.b,
                         "error_class": result.error_class})
        classes = Counter(result.error_class or "correct" for result in results)
        executable = sum(result.error_class in {"", "wrong_answer", "no_answer"} for result in results)
        summary[name] = {"accuracy": sum(result.b for result in results) / len(results), "n": len(results),
                         "correct": sum(result.b for result in results), "executable_rate": executable / len(results),
                         "held_in": bool(spec.get("held_in", True)), "outcomes": dict(classes)}
        log.info("%s %s: accuracy %.3f on %d", out_json, name, summary[name]["accuracy"], len(results))
    art.write_table(rows, out_parquet, art.EVAL)
    accuracies = [entry["accuracy"] for entry in summary.values()]
    art.write_json({"domain": domain, "iteration": iteration, "model": str(model_dir), "testsets": summary,
                    "average": sum(accuracies) / len(accuracies)}, out_json)


def summarize(eval_paths: Sequence[str], pool_paths: Sequence[str], out_md: str) -> None:
    """A Markdown table of accuracy per iteration, with the pool's growth beside it."""
    pools = {}
    for path in pool_paths:
        pool = art.read_table(path, art.POOL)
        pools[int(Path(path).parent.name.removeprefix("iter"))] = (len(pool), int((pool["b"] == 1).sum()))
    evals = [json.loads(Path(path).read_text()) for path in eval_paths]
    names = list(evals[0]["testsets"]) if evals else []
    lines = ["| iteration | " + " | ".join(names) + " | average | pool size | pool positives |",
             "|---" * (len(names) + 4) + "|"]
    for entry in sorted(evals, key=lambda e: e["iteration"]):
        size, positives = pools.get(entry["iteration"], ("—", "—"))
        cells = [f"{100 * entry['testsets'][name]['accuracy']:.1f}" for name in names]
        lines.append(f"| {entry['iteration']} | " + " | ".join(cells) + f" | {100 * entry['average']:.1f} | "
                     f"{size} | {positives} |")
    art.write_text("\n".join(lines) + "\n", out_md)
    log.info("%s:\n%s", out_md, "\n".join(lines))
