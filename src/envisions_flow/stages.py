"""One function per workflow stage: read typed artifacts, do the work, write typed artifacts.

The Snakemake scripts are one-line calls into these functions, so every stage
can also be run (and tested) from Python. A stage names its run by the run's
directory under results/ ("math" for the default ENVISIONS run, "math/star"
for a named one); the run's strategy (runs.py) decides what the stage does.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from . import artifacts as art
from .analysis import correct_unique, exploration_metrics, log_prob_margins
from .config import dataset_key, dataset_spec
from .datasets import load_tasks
from .environments import Environment, Task, make_environment
from .environments.web import parse_episode_id
from .generation import Generation, OpenAIChatBackend, load_backend
from .runs import method_of, parse_run_dir, run_settings, training_plan
from .selection import filter_trajectories, preference_pairs, select_training_sets, update_pool
from .shards import clear, files_signature, fingerprint, map_in_shards

log = logging.getLogger("envisions_flow")

DEFAULT_SHARD_SIZE = 256   # inputs per shard of explore and refine
EXECUTION_SHARD = 4_096    # programs per shard of execute

# Error classes of programs that ran to the end (math: also those whose answer the judge ran out of time on;
# web: the episode also ended too slowly, or not at all).
EXECUTED = {"", "wrong_answer", "no_answer", "judge_timeout", "too_slow", "not_done"}


def _tasks(frame: pd.DataFrame) -> list[Task]:
    return [Task(row.id, row.question, row.answer) for row in frame.itertuples()]


def _settings(config: dict[str, Any], run: str) -> dict[str, Any]:
    """The settings a run sees: its domain's, with the method's strategy and the run's overrides."""
    return run_settings(config, *parse_run_dir(run))


def _environment(config: dict[str, Any], run: str, dataset: str = "train") -> Environment:
    """The run's environment, set up for one dataset (answer type, world assumption)."""
    domain = parse_run_dir(run)[0]
    return make_environment(domain, _settings(config, run), dataset_spec(config, domain, dataset))


VLLM_OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len")


def _backend(config: dict[str, Any], model_dir: str | Path):
    """The policy's generation backend."""
    generation = config["generation"]
    options: dict[str, Any] = {}
    if generation["backend"] == "vllm":
        # set keys only: the schema gives them no defaults (finished runs keep their params), VLLMBackend has its own
        options = {key: generation[key] for key in VLLM_OPTIONS if generation.get(key) is not None}
    return load_backend(generation["backend"], model_dir, batch_size=int(generation["batch_size"]),
                        dtype=generation["dtype"], **options)


def _seed(config: dict[str, Any], iteration: int, stage: int) -> int:
    return int(config["generation"]["seed"]) * 1_000_003 + iteration * 101 + stage


def _shard_size(config: dict[str, Any]) -> int:
    """Inputs per shard of explore and refine (`generation.shard_size`); each shard has its own seed."""
    return int(config["generation"].get("shard_size", DEFAULT_SHARD_SIZE))


def _shard_seed(seed: int, index: int) -> int:
    return seed + 7_919 * index


def _one_each(backend: Any, prompts: list[str], max_new_tokens: int, seed: int) -> list[Generation]:
    """One sample per prompt (refinements, later turns)."""
    return [generation for (generation,) in backend.sample(prompts, 1, max_new_tokens, seed)]


def _generation_row(task: Any, sample_idx: int, prompt: str, generation: Generation, environment: Environment,
                    source_program: str = "") -> dict[str, Any]:
    """One row of the GENERATIONS schema."""
    return {"id": task.id, "sample_idx": sample_idx, "question": task.question, "answer": task.answer,
            "prompt": prompt, "completion": generation.text, "program": environment.extract_program(generation.text),
            "n_tokens": generation.n_tokens, "logprob_sum": generation.logprob_sum,
            "self_reward": generation.self_reward, "source_program": source_program}


def more_turns(environment: Environment, backend: Any, tasks: Sequence[Task], conversations: Sequence[Any],
                generations: Sequence[Generation], generate: Callable[[list[str], int], list[Generation]]
                ) -> list[Generation]:
    """Multi-turn environments (web with `max_turns` > 1): while a program leaves its episode open,
    show the policy the page and let it write the next program.

    `generate(prompts, turn)` gives one generation per prompt. Each input comes back as one
    generation whose text renders the joined program (it replays every turn in a fresh
    episode) and whose log-prob and tokens are those of all turns, so the self-reward is the
    mean over the whole trajectory. Single-turn environments get `generations` back as they are.
    """
    max_turns = int(getattr(environment, "max_turns", 1))
    merged, conversations = list(generations), list(conversations)
    last = [environment.extract_program(generation.text) for generation in generations]
    joined = list(last)
    for turn in range(2, max_turns + 1):
        observations = environment.open_episodes(tasks, joined)  # type: ignore[attr-defined]
        active = [i for i, observation in enumerate(observations) if observation and last[i]]
        if not active:
            break
        for i in active:
            conversations[i] = environment.next_turn_prompt(conversations[i], last[i], observations[i])  # type: ignore[attr-defined]
        replies = generate([backend.render(conversations[i]) for i in active], turn)
        for i, reply in zip(active, replies):
            last[i] = environment.extract_program(reply.text)
            joined[i] = f"{joined[i]}\n{last[i]}" if last[i] else joined[i]
            counted = merged[i].token_count is not None or reply.token_count is not None
            merged[i] = Generation(environment.render_solution(joined[i]), merged[i].token_ids + reply.token_ids,
                                   merged[i].logprob_sum + reply.logprob_sum,
                                   merged[i].n_tokens + reply.n_tokens if counted else None)
        log.info("turn %d: %d of %d episodes were still open", turn, len(active), len(merged))
    return merged


def prepare_data(config: dict[str, Any], domain: str, name: str, out: str | Path) -> None:
    spec = dataset_spec(config, domain, name)
    frame = load_tasks(spec, dataset_key(domain, name), domain)
    art.write_table(frame, out, art.TASKS)
    log.info("%s: %d tasks from %s", out, len(frame), spec.get("kind"))


def explore(config: dict[str, Any], run: str, iteration: int, tasks_path: str, model_dir: str, out: str) -> None:
    """Self-exploration: K samples per input with their self-rewards (Steps 1 and 7), kept in shards."""
    settings = _settings(config, run)
    tasks = _tasks(art.read_table(tasks_path, art.TASKS))
    environment = _environment(config, run)
    few_shot = iteration <= int(settings["explore"]["few_shot_iterations"])
    if settings["strategy"]["explorer"] == "teacher":
        backend, model = OpenAIChatBackend(**settings["teacher"]), settings["teacher"]
    else:
        backend, model = _backend(config, model_dir), files_signature(model_dir)
    k, max_new_tokens = int(settings["explore"]["k"]), int(settings["explore"]["max_new_tokens"])
    seed = _seed(config, iteration, 1)

    def work(shard: Sequence[Task], index: int) -> list[dict[str, Any]]:
        conversations = [environment.explore_prompt(task, few_shot) for task in shard]
        prompts = [backend.render(messages) for messages in conversations]
        samples = backend.sample(prompts, k, max_new_tokens, _shard_seed(seed, index))
        flat = more_turns(environment, backend, [task for task in shard for _ in range(k)],
                          [messages for messages in conversations for _ in range(k)],
                          [generation for generations in samples for generation in generations],
                          lambda more, turn: _one_each(backend, more, max_new_tokens,
                                                       _shard_seed(seed + 10 * turn, index)))
        samples = [flat[start:start + k] for start in range(0, len(flat), k)]
        return [_generation_row(task, sample_idx, prompt, generation, environment)
                for task, prompt, generations in zip(shard, prompts, samples)
                for sample_idx, generation in enumerate(generations)]

    started = time.monotonic()
    key = fingerprint("explore", [(t.id, t.question) for t in tasks], few_shot, k, max_new_tokens, seed, model,
                      _shard_size(config))
    frame = map_in_shards(tasks, _shard_size(config), out, art.GENERATIONS, key, work)
    art.write_table(frame, out, art.GENERATIONS)
    clear(out)
    log.info("%s: %d samples (%d inputs, few-shot=%s), %d tokens in %.0f s", out, len(frame), len(tasks), few_shot,
             int(frame["n_tokens"].sum()), time.monotonic() - started)


def refine(config: dict[str, Any], run: str, iteration: int, samples_path: str, model_dir: str, out: str) -> None:
    """Self-refinement: one refined program per sample, written from (x, a_k) (Steps 4 and 7), kept in shards."""
    settings = _settings(config, run)
    samples = art.read_table(samples_path, art.GENERATIONS)
    environment = _environment(config, run)
    backend = _backend(config, model_dir)
    max_new_tokens = int(settings["refine"]["max_new_tokens"])
    seed = _seed(config, iteration, 2)

    def work(shard: Sequence[Any], index: int) -> list[dict[str, Any]]:
        tasks = [Task(row.id, row.question, row.answer) for row in shard]
        conversations = [environment.refine_prompt(task, row.program) for task, row in zip(tasks, shard)]
        prompts = [backend.render(messages) for messages in conversations]
        generations = _one_each(backend, prompts, max_new_tokens, _shard_seed(seed, index))
        generations = more_turns(environment, backend, tasks, conversations, generations,
                                 lambda more, turn: _one_each(backend, more, max_new_tokens,
                                                              _shard_seed(seed + 10 * turn, index)))
        return [_generation_row(row, row.sample_idx, prompt, generation, environment, source_program=row.program)
                for row, prompt, generation in zip(shard, prompts, generations)]

    started = time.monotonic()
    rows = list(samples.itertuples())
    key = fingerprint("refine", samples[["id", "sample_idx", "question", "program"]].values.tolist(), max_new_tokens,
                      seed, files_signature(model_dir), _shard_size(config))
    frame = map_in_shards(rows, _shard_size(config), out, art.GENERATIONS, key, work)
    art.write_table(frame, out, art.GENERATIONS)
    clear(out)
    log.info("%s: %d refinements in %.0f s", out, len(frame), time.monotonic() - started)


def execute(config: dict[str, Any], run: str, generations_path: str, out: str) -> None:
    """Run every program in the environment: binary reward b and error class (Steps 2-3 and 5-6).

    Verdicts are kept in shards of EXECUTION_SHARD programs, so a killed job resumes.
    """
    generations = art.read_table(generations_path, art.GENERATIONS)
    environment = _environment(config, run)

    def work(shard: Sequence[Any], index: int) -> list[dict[str, Any]]:
        results = environment.execute([Task(row.id, row.question, row.answer) for row in shard],
                                      [row.program for row in shard])
        return [{"id": row.id, "sample_idx": row.sample_idx, "b": result.b, "value": result.value,
                 "error_class": result.error_class, "duration_s": result.duration_s}
                for row, result in zip(shard, results)]

    key = fingerprint("execute", generations[["id", "sample_idx", "question", "answer", "program"]].values.tolist(),
                      _settings(config, run)["execution"])
    frame = map_in_shards(list(generations.itertuples()), EXECUTION_SHARD, out, art.EXECUTIONS, key, work)
    art.write_table(frame, out, art.EXECUTIONS)
    clear(out)
    classes = Counter(error_class or "correct" for error_class in frame["error_class"])
    log.info("%s: %d programs, %s", out, len(frame), dict(classes))


def _judged(generations_path: str, executions_path: str) -> pd.DataFrame:
    generations = art.read_table(generations_path, art.GENERATIONS)
    executions = art.read_table(executions_path, art.EXECUTIONS)
    return generations.merge(executions[["id", "sample_idx", "b"]], on=["id", "sample_idx"], validate="one_to_one")


def build_pool(config: dict[str, Any], run: str, iteration: int, previous_pool: str | None, samples: str,
               samples_exec: str, refinements: str | None, refinements_exec: str | None, out: str) -> None:
    """Eq. 2 per (x, k), then the pool of the previous iteration (when the run keeps one) plus the chosen."""
    strategy = _settings(config, run)["strategy"]
    environment = _environment(config, run)
    columns = ["id", "sample_idx", "question", "answer", "program", "b", "self_reward"]
    refined = _judged(refinements, refinements_exec)[columns] if strategy["refine"] and refinements else None
    chosen = filter_trajectories(_judged(samples, samples_exec)[columns], refined, iteration)
    previous = art.read_table(previous_pool, art.POOL) if previous_pool and strategy["pool"] else None
    pool = update_pool(previous, chosen, environment.program_key)
    art.write_table(pool, out, art.POOL)
    log.info("%s: %d trajectories (%d positive), %d refined chosen this iteration", out, len(pool),
             int((pool["b"] == 1).sum()), int((chosen["origin"] == "refine").sum()))


def judge(config: dict[str, Any], run: str, iteration: int, samples_path: str, model_dir: str, out: str) -> None:
    """Self-Rewarding: the policy scores each of its samples with the LLM-as-a-judge rubric."""
    from .judging import score_all

    options = _settings(config, run)["self_rewarding"]
    samples = art.read_table(samples_path, art.GENERATIONS)
    started = time.monotonic()
    scores = score_all(_backend(config, model_dir), _tasks(samples), list(samples["program"]),
                       int(options["judge_samples"]), int(options["judge_max_new_tokens"]), _seed(config, iteration, 4))
    rows = [{"id": row.id, "sample_idx": row.sample_idx, "score": score, "judgment": text}
            for row, (score, text) in zip(samples.itertuples(), scores)]
    art.write_table(rows, out, art.JUDGMENTS)
    log.info("%s: %d judged, %d without a score, in %.0f s", out, len(rows), sum(r["score"] is None for r in rows),
             time.monotonic() - started)


def warmup(config: dict[str, Any], run: str, base_model: str, out: str) -> None:
    """Self-Rewarding's warm-up: SFT of the base model on instruction data before the first iteration."""
    from .generation import render_chat
    from .judging import load_warmup
    from .training import _tokenizer, train as run_training

    settings = _settings(config, run)
    tokenizer = _tokenizer(base_model)
    examples = [{"prompt": render_chat(tokenizer, [{"role": "user", "content": e["prompt"]}]),
                 "completion": e["completion"], "loss": "warmup"}
                for e in load_warmup(settings["self_rewarding"]["warmup"])]
    metrics = run_training(base_model, examples, settings["training"], out)
    log.info("%s: warmed up on %d examples: %s", out, len(examples), metrics)


def select(config: dict[str, Any], run: str, iteration: int, pool_path: str, out_u1: str, out_u2: str,
           samples_path: str | None = None, judgments_path: str | None = None) -> None:
    """U1 (Eq. 3) and U2 (Eq. 5) from the pool; for DPO methods U2 holds the preference pairs.

    Runs labelled by their own judge take their pairs from the judgments of
    this iteration's samples instead of from the environment's verdicts.
    """
    settings = _settings(config, run)
    selection, strategy = settings["selection"], settings["strategy"]
    pool = art.read_table(pool_path, art.POOL)
    seed = _seed(config, iteration, 3)
    n1, n2 = int(selection["n1"]), int(selection["n2"])
    u1, u2 = select_training_sets(pool, n1, n2, selection["u1_rule"], strategy["ranking"], seed)
    if strategy["labels"] == "judge":
        from .judging import judged_pairs

        u2 = judged_pairs(art.read_table(samples_path, art.GENERATIONS), art.read_table(judgments_path, art.JUDGMENTS),
                          n2)
    elif strategy["dpo"]:
        u2 = preference_pairs(pool, n2, strategy["ranking"], seed)
    art.write_table(u1, out_u1, art.U1)
    art.write_table(u2, out_u2, art.U2)
    log.info("%s: %d positives for %d inputs; %s: %d pairs", out_u1, len(u1), u1["id"].nunique(), out_u2, len(u2))


def train(config: dict[str, Any], run: str, iteration: int, init_model: str, u1_path: str, u2_path: str,
          out: str) -> None:
    """Train the run's initial model (the base model for ENVISIONS) on what its strategy learns from.

    When training wants several processes (GPUs, nodes: launch.py), this call starts them, each of
    which calls `train` again, and returns when they have finished.
    """
    from .launch import launch
    from .training import _tokenizer, build_examples, build_pairs, train as run_training

    settings = _settings(config, run)
    if launch("envisions_flow.stages:train", [config, run, iteration, init_model, u1_path, u2_path, out],
              settings["training"], Path(out).parent):
        return
    strategy = settings["strategy"]
    environment = _environment(config, run)
    tokenizer = _tokenizer(init_model)
    u1, u2 = art.read_table(u1_path, art.U1), art.read_table(u2_path, art.U2)
    plan = training_plan(strategy, iteration)
    examples = build_examples(u1 if plan["sft"] else u1.iloc[0:0], u2 if plan["l2"] else u2.iloc[0:0],
                              environment, tokenizer)
    pairs = build_pairs(u2, environment, tokenizer) if plan["dpo"] else []
    metrics = run_training(init_model, examples, settings["training"], out, pairs, settings["dpo"])
    log.info("%s: trained from %s on %d SFT examples and %d DPO pairs: %s", out, init_model, len(examples),
             len(pairs), metrics)


def evaluate(config: dict[str, Any], run: str, iteration: int, model_dir: str, testsets: Sequence[str],
             test_paths: Sequence[str], out_json: str, out_parquet: str) -> None:
    """Greedy accuracy per test set (zero-shot; few-shot for iteration 0, the untrained base model).

    With eval.self_refine, each prediction also gets one greedy refine pass
    (inference-time self-refinement, paper Table 8) and both accuracies are reported.
    """
    settings = _settings(config, run)
    domain = parse_run_dir(run)[0]
    self_refine = bool(settings["eval"]["self_refine"])
    max_new_tokens = int(settings["eval"]["max_new_tokens"])
    backend = _backend(config, model_dir)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name, path in zip(testsets, test_paths):
        spec = dataset_spec(config, domain, name)
        environment = _environment(config, run, name)
        tasks = _tasks(art.read_table(path, art.TASKS))

        def greedy(conversations: list[Any]) -> list[Generation]:
            generations = backend.greedy([backend.render(messages) for messages in conversations], max_new_tokens)
            return more_turns(environment, backend, tasks, conversations, generations,
                               lambda more, turn: backend.greedy(more, max_new_tokens))

        generations = greedy([environment.explore_prompt(task, few_shot=iteration == 0) for task in tasks])
        programs = [environment.extract_program(generation.text) for generation in generations]
        results = environment.execute(tasks, programs)
        refined_programs: list[str | None] = [None] * len(tasks)
        refined_b: list[int | None] = [None] * len(tasks)
        if self_refine:
            refined_programs = [environment.extract_program(generation.text) for generation in
                                greedy([environment.refine_prompt(task, program) for task, program in zip(tasks, programs)])]
            refined_b = [result.b for result in environment.execute(tasks, refined_programs)]
        for task, generation, program, result, refined, b_refined in zip(tasks, generations, programs, results,
                                                                           refined_programs, refined_b):
            rows.append({"testset": name, "id": task.id, "question": task.question, "answer": task.answer,
                         "completion": generation.text, "program": program, "value": result.value, "b": result.b,
                         "error_class": result.error_class, "refined_program": refined, "refined_b": b_refined})
        classes = Counter(result.error_class or "correct" for result in results)
        executable = sum(result.error_class in EXECUTED for result in results)
        summary[name] = {"accuracy": sum(result.b for result in results) / len(results), "n": len(results),
                         "correct": sum(result.b for result in results), "executable_rate": executable / len(results),
                         "held_in": bool(spec.get("held_in", True)), "outcomes": dict(classes)}
        if self_refine:
            summary[name]["accuracy_self_refined"] = sum(refined_b) / len(results)
        if domain == "web":
            summary[name].update(web_success(tasks, results))
        log.info("%s %s: accuracy %.3f on %d", out_json, name, summary[name]["accuracy"], len(results))
    art.write_table(rows, out_parquet, art.EVAL)
    run_name = parse_run_dir(run)[1]
    report: dict[str, Any] = {"domain": domain, "run": run_name, "method": method_of(config, run_name),
                              "iteration": iteration, "model": str(model_dir), "testsets": summary,
                              "average": _mean([entry["accuracy"] for entry in summary.values()])}
    if self_refine:
        report["average_self_refined"] = _mean([entry["accuracy_self_refined"] for entry in summary.values()])
    if domain == "web":
        report["average_raw_success"] = _mean([entry["raw_success"] for entry in summary.values()])
    art.write_json(report, out_json)


def _raw_success(result: Any) -> int:
    """MiniWob's raw reward (Execution.value) above 0: solved, however slowly (b also needs the time-decayed
    reward to reach the threshold)."""
    return int(result.value is not None and float(result.value) > 0)


def web_success(tasks: Sequence[Task], results: Sequence[Any]) -> dict[str, Any]:
    """Raw success over the test set, and success per MiniWob task (paper Table 11; Task.answer = task name)."""
    per_task: dict[str, dict[str, Any]] = {}
    for task, result in zip(tasks, results):
        entry = per_task.setdefault(task.answer, {"n": 0, "correct": 0, "raw_correct": 0})
        entry["n"] += 1
        entry["correct"] += result.b
        entry["raw_correct"] += _raw_success(result)
    for entry in per_task.values():
        entry["success"] = entry["correct"] / entry["n"]
        entry["raw_success"] = entry["raw_correct"] / entry["n"]
    return {"raw_success": sum(_raw_success(result) for result in results) / len(results),
            "task_average": _mean([entry["success"] for entry in per_task.values()]),
            "per_task": dict(sorted(per_task.items()))}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def margins(config: dict[str, Any], run: str, model_dir: str, u2_path: str, out: str) -> None:
    """Δlog p of the iteration's U2 pairs under its trained checkpoint (paper Fig. 5b)."""
    frame = log_prob_margins(model_dir, art.read_table(u2_path, art.U2), _environment(config, run))
    art.write_table(frame, out, art.MARGINS)
    log.info("%s: mean Δlog p %.4f over %d pairs", out, frame["margin"].mean() if len(frame) else float("nan"),
             len(frame))


def _iteration_of(path: str | Path) -> int:
    return int(Path(path).parent.name.removeprefix("iter"))


def _exploration_unit(domain: str, task_id: str) -> str:
    """What EA/STB count as one input: the task input, except on the web, where every iteration
    explores fresh episodes (new seeds), so the unit that can be solved again is the MiniWob task."""
    return parse_episode_id(task_id)[0] if domain == "web" else task_id


def analyze(config: dict[str, Any], run: str, eval_paths: Sequence[str], exec_paths: Sequence[str],
            pool_paths: Sequence[str], margin_paths: Sequence[str], out: str) -> None:
    """One row per iteration: accuracy, solved/newly solved, EA/STB, Δlog p, correct-and-unique trajectories.

    `exec_paths` are the execution results of each iteration (samples, and
    refinements when the run refines; possibly read from another run's directory
    where shared); iteration 0 (the base model) has accuracy only.
    """
    domain, run_name = parse_run_dir(run)
    solved: dict[int, set[str]] = {}
    for path in exec_paths:
        judged = art.read_table(path, art.EXECUTIONS)
        solved.setdefault(_iteration_of(path), set()).update(
            _exploration_unit(domain, task_id) for task_id in judged.loc[judged["b"] == 1, "id"])
    pools = {_iteration_of(path): path for path in pool_paths}
    pair_margins = {_iteration_of(path): path for path in margin_paths}
    exploration = exploration_metrics(solved).set_index("iteration") if solved else pd.DataFrame()
    rows = []
    for path in eval_paths:
        iteration = _iteration_of(path)
        row: dict[str, Any] = {"domain": domain, "run": run_name, "method": method_of(config, run_name),
                               "iteration": iteration,
                               "average_accuracy": json.loads(Path(path).read_text())["average"],
                               "solved": None, "newly_solved": None, "exploratory_ability": None,
                               "stability": None, "exploratory_ability_cumulative": None,
                               "stability_cumulative": None, "delta_logp": None, "correct_unique": None}
        if iteration in solved:
            row.update(exploration.loc[iteration].to_dict())
            row["correct_unique"] = correct_unique(art.read_table(pools[iteration], art.POOL))
            pairs = art.read_table(pair_margins[iteration], art.MARGINS)
            row["delta_logp"] = float(pairs["margin"].mean()) if len(pairs) else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    art.write_table(frame, out, art.ANALYSIS)
    log.info("%s:\n%s", out, frame.to_string(index=False))


def summarize(eval_paths: Sequence[str], pool_paths: Sequence[str], out_md: str) -> None:
    """A Markdown table of accuracy per iteration, with the pool's growth beside it."""
    pools = {}
    for path in pool_paths:
        pool = art.read_table(path, art.POOL)
        pools[_iteration_of(path)] = (len(pool), int((pool["b"] == 1).sum()))
    evals = [json.loads(Path(path).read_text()) for path in eval_paths]
    names = list(evals[0]["testsets"]) if evals else []
    lines = ["| iteration | " + " | ".join(names) + " | average | pool size | pool positives |",
             "|---" * (len(names) + 4) + "|"]
    for path, entry in sorted(zip(eval_paths, evals), key=lambda pair: _iteration_of(pair[0])):
        entry = {**entry, "iteration": _iteration_of(path)}
        size, positives = pools.get(entry["iteration"], ("—", "—"))
        cells = [f"{100 * entry['testsets'][name]['accuracy']:.1f}" for name in names]
        lines.append(f"| {entry['iteration']} | " + " | ".join(cells) + f" | {100 * entry['average']:.1f} | "
                     f"{size} | {positives} |")
    art.write_text("\n".join(lines) + "\n", out_md)
    log.info("%s:\n%s", out_md, "\n".join(lines))
