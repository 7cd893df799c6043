"""Upper bounds on the tokens a configuration samples and trains on, and the GPU hours they imply.

Every number is an upper bound computed from the config alone, before anything runs:

- sampling (explore, refine, evaluate, judge): every sequence is counted at its full token limit
  (`max_new_tokens`), as if no answer stopped early; prompts (prefill) are not counted;
- training (train): U1 and U2 at their largest (N1 and N2 per input, no more than the candidates an
  input can have), every example at `training.max_length`, times the epochs; DPO counts the chosen and
  the rejected sequence of each pair (the reference model's forward pass is not counted);
- scoring (margins): the two sequences of every U2 pair at `max_length`, forward only.

GPU hours are tokens / (tokens per second per GPU) / 3600: they assume the work spreads over GPUs
without loss, so they do not depend on how many GPUs a job has.

From the project directory (docs/slurm.md, step 5):

    .venv/bin/python -m envisions_flow.workflow.gpu_hours                       # config/config.yaml, per iteration
    .venv/bin/python -m envisions_flow.workflow.gpu_hours --configfile config/demo.yaml --summary
    .venv/bin/python -m envisions_flow.workflow.gpu_hours --size math.train=7473 --sampling-tokens-per-s 2500
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envisions_flow.datasets.loaders import with_preset
from envisions_flow.datasets.miniwob import MINIWOB_TASKS
from envisions_flow.workflow.config import ConfigError, dataset_spec, domain_settings, drop_removed_testsets
from envisions_flow.workflow.runs import deep_merge, run_settings, runs_of, training_plan, with_replicates

# Throughput per GPU assumed when none is given: rough figures for a 7B model in bfloat16 on one
# A100/H100-class GPU; measure your own and pass them.
SAMPLING_TOKENS_PER_S = 1000.0
TRAINING_TOKENS_PER_S = 3000.0
SCORING_TOKENS_PER_S = 9000.0


def load_config(paths: list[str | Path]) -> dict[str, Any]:
    """config/config.yaml and any --configfile overlays, merged key by key as Snakemake merges them."""
    import yaml

    config: dict[str, Any] = {}
    for path in paths:
        with open(path) as handle:
            config = deep_merge(config, yaml.safe_load(handle) or {})
    drop_removed_testsets(config)
    return with_replicates(config)  # each replicate counted as the run it is


def dataset_size(config: dict[str, Any], domain: str, name: str, sizes: dict[str, int],
                 results: Path | None = None) -> int | None:
    """Rows of a data set: given (`sizes["math.train"]`), counted in its prepared Parquet file, or from its
    spec (generated `n`, MiniWob tasks × episodes, `limit`); None when only downloading it would tell."""
    key = f"{domain}.{name}"
    if key in sizes:
        return sizes[key]
    spec = dataset_spec(config, domain, name)
    if spec.get("parts"):
        counted = [spec_size(part) for part in spec["parts"]]
        size = None if None in counted else sum(counted)
    else:
        size = spec_size(spec)
    if size is None:
        prepared = results / domain / "data" / f"{name}.parquet" if results else None
        if prepared is not None and prepared.is_file():
            import pyarrow.parquet as pq

            return pq.ParquetFile(prepared).metadata.num_rows
    return size


def spec_size(spec: dict[str, Any]) -> int | None:
    """Rows of one data set spec that the config alone tells (generated `n`, MiniWob tasks × episodes, `limit`)."""
    spec = with_preset(spec)
    if spec.get("kind") == "generated":
        size = int(spec["n"])
    elif spec.get("kind") == "miniwob":
        size = len(spec.get("tasks") or MINIWOB_TASKS) * int(spec["episodes"])
    else:
        size = None
    if spec.get("limit"):
        size = int(spec["limit"]) if size is None else min(size, int(spec["limit"]))
    return size


@dataclass
class Row:
    """One iteration of one run: token upper bounds per stage."""

    domain: str
    run: str
    iteration: int
    explore: int = 0
    refine: int = 0
    evaluate: int = 0
    judge: int = 0
    train: int = 0
    margins: int = 0
    unknown: list[str] = field(default_factory=list)

    @property
    def sampling(self) -> int:
        return self.explore + self.refine + self.evaluate + self.judge

    def gpu_hours(self, sampling_rate: float, training_rate: float, scoring_rate: float) -> dict[str, float]:
        hours = {"sampling": self.sampling / sampling_rate / 3600, "training": self.train / training_rate / 3600,
                 "scoring": self.margins / scoring_rate / 3600}
        hours["total"] = sum(hours.values())
        return hours


def estimate(config: dict[str, Any], sizes: dict[str, int] | None = None, results: Path | None = None,
             domains: list[str] | None = None, runs: list[str] | None = None) -> list[Row]:
    """A row per configured domain, run and iteration (0 = the base model's evaluation)."""
    sizes = sizes or {}
    rows = []
    for domain in domains or list(config["domains"]):
        tests = list(domain_settings(config, domain)["testsets"])
        test_size = {name: dataset_size(config, domain, name, sizes, results) for name in tests}
        train_size = dataset_size(config, domain, "train", sizes, results)
        for run in runs_of(config, domain):
            if runs and run not in runs:
                continue
            settings = run_settings(config, domain, run)
            rows.extend(_run_rows(domain, run, settings, train_size, test_size))
    return rows


def _run_rows(domain: str, run: str, settings: dict[str, Any], train_size: int | None,
              test_size: dict[str, int | None]) -> list[Row]:
    strategy = settings["strategy"]
    k = int(settings["explore"]["k"])
    turns = int((settings.get("execution") or {}).get("max_turns", 1))  # web: one program per turn
    explore_tokens = int(settings["explore"]["max_new_tokens"]) * turns
    refine_tokens = int(settings["refine"]["max_new_tokens"]) * turns
    eval_tokens = int(settings["eval"]["max_new_tokens"]) * turns
    if settings["eval"].get("self_refine"):
        eval_tokens += refine_tokens
    selection, training = settings["selection"], settings["training"]
    max_length, epochs = int(training["max_length"]), int(training["epochs"])
    dpo_epochs = int((settings.get("dpo") or {}).get("epochs") or epochs)
    judging = settings.get("self_rewarding") or {}
    unknown_tests = [name for name, size in test_size.items() if size is None]
    inputs = train_size or 0

    rows = []
    for iteration in range(int(settings["iterations"]) + 1):
        row = Row(domain, run, iteration)
        row.evaluate = sum(size or 0 for size in test_size.values()) * eval_tokens
        row.unknown = [f"{domain}.{name}" for name in unknown_tests]
        if iteration > 0:
            if train_size is None:
                row.unknown.append(f"{domain}.train")
            if strategy["explorer"] == "policy":  # a teacher's samples come from its endpoint, not a GPU
                row.explore = inputs * k * explore_tokens
            if strategy["refine"]:
                row.refine = inputs * k * refine_tokens
            if strategy["labels"] == "judge":
                row.judge = inputs * k * int(judging.get("judge_samples", 1)) * int(
                    judging.get("judge_max_new_tokens", 256))
            # candidates one input can have in its pool: K samples (and K refinements) per iteration so far
            candidates = k * (2 if strategy["refine"] else 1) * (iteration if strategy["pool"] else 1)
            u1 = inputs * min(int(selection["n1"]), candidates)
            u2 = inputs * min(int(selection["n2"]), candidates)
            plan = training_plan(strategy, iteration)
            if plan["sft"]:
                row.train += (u1 + (u2 if plan["l2"] else 0)) * max_length * epochs
            if plan["dpo"]:
                row.train += u2 * 2 * max_length * dpo_epochs
            row.margins = u2 * 2 * max_length
        rows.append(row)
    return rows


def parse_sizes(values: list[str]) -> dict[str, int]:
    """`math.train=7473` flags to {"math.train": 7473}."""
    sizes = {}
    for value in values:
        key, _, number = value.partition("=")
        if "." not in key or not number.isdigit():
            raise ConfigError(f"--size {value!r}: expected DOMAIN.DATASET=ROWS, e.g. math.train=7473")
        sizes[key] = int(number)
    return sizes


def human(tokens: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if tokens >= scale:
            return f"{tokens / scale:.2f}{unit}"
    return str(int(tokens))


def main(argv: list[str] | None = None) -> int:
    from tabulate import tabulate

    parser = argparse.ArgumentParser(
        description="Upper bounds on the tokens each configured run samples and trains on, and the GPU hours "
                    "they imply at the given throughput. Sampling counts every sequence at its max_new_tokens "
                    "(explore: inputs x K, refine: inputs x K, evaluate: test rows, plus a refine pass with "
                    "eval.self_refine, judge: inputs x K x judge_samples); training counts U1 + U2 at their "
                    "largest (N1 and N2 per input) x max_length x epochs; scoring (margins) counts two "
                    "sequences per U2 pair at max_length, forward only. Prompt tokens are not counted.")
    parser.add_argument("--configfile", nargs="*", default=[],
                        help="config files merged over config/config.yaml, as with snakemake")
    parser.add_argument("--base-config", default="config/config.yaml",
                        help="the base config (default: %(default)s)")
    parser.add_argument("--results", default="results",
                        help="where prepared data sets are counted when their size is not in the config "
                             "(hub and file data; default: %(default)s)")
    parser.add_argument("--size", action="append", default=[], metavar="DOMAIN.DATASET=ROWS",
                        help="rows of a data set the config cannot tell (hub or file data not prepared yet), "
                             "e.g. math.train=7473; may be repeated")
    parser.add_argument("--sampling-tokens-per-s", type=float, default=SAMPLING_TOKENS_PER_S,
                        help="generated tokens per second per GPU (default: %(default)s, a rough figure for a 7B "
                             "model in bfloat16 on one A100/H100 with batched generation)")
    parser.add_argument("--training-tokens-per-s", type=float, default=TRAINING_TOKENS_PER_S,
                        help="trained tokens (forward + backward) per second per GPU (default: %(default)s, the "
                             "same kind of rough 7B figure)")
    parser.add_argument("--scoring-tokens-per-s", type=float, default=SCORING_TOKENS_PER_S,
                        help="tokens per second per GPU of a forward pass alone, for margins (default: "
                             "%(default)s, three times the training default)")
    parser.add_argument("--parameters", type=float,
                        help="parameters of the model, for the disk estimate (default: counted from the converted "
                             "base model under --results, or from model.path when it is on this machine)")
    parser.add_argument("--checkpoint-bytes-per-parameter", type=float, default=2,
                        help="bytes per parameter of a saved checkpoint (default: %(default)s, bfloat16 as trained "
                             "on GPUs; 4 for float32, as on CPUs)")
    parser.add_argument("--domain", action="append", help="only this domain (may be repeated)")
    parser.add_argument("--run", action="append", help="only this run, e.g. envisions or star (may be repeated)")
    parser.add_argument("--summary", action="store_true", help="one line per run instead of one per iteration")
    args = parser.parse_args(argv)

    try:
        config = load_config([args.base_config, *args.configfile])
        rows = estimate(config, parse_sizes(args.size), Path(args.results), args.domain, args.run)
    except (ConfigError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rates = (args.sampling_tokens_per_s, args.training_tokens_per_s, args.scoring_tokens_per_s)

    lines = _summary(rows) if args.summary else rows
    table = []
    for row in lines:
        hours = row.gpu_hours(*rates)
        table.append([row.domain, row.run, row.iteration, human(row.explore), human(row.refine),
                      human(row.evaluate), human(row.judge), human(row.train), human(row.margins),
                      f"{hours['sampling']:,.1f}", f"{hours['training'] + hours['scoring']:,.1f}",
                      f"{hours['total']:,.1f}"])
    headers = ["domain", "run", "iterations" if args.summary else "iteration", "explore ≤", "refine ≤",
               "evaluate ≤", "judge ≤", "train ≤", "margins ≤", "GPU h sampling ≤", "GPU h training ≤",
               "GPU h ≤"]
    print(tabulate(table, headers=headers, tablefmt="github", disable_numparse=True))

    total = Row("all", "all", 0)
    for row in rows:
        for stage in ("explore", "refine", "evaluate", "judge", "train", "margins"):
            setattr(total, stage, getattr(total, stage) + getattr(row, stage))
    hours = total.gpu_hours(*rates)
    print(f"\nTotal, upper bound: {human(total.sampling)} sampled tokens, {human(total.train)} trained tokens, "
          f"{human(total.margins)} scored tokens = {hours['total']:,.1f} GPU hours "
          f"({hours['sampling']:,.1f} sampling, {hours['training']:,.1f} training, {hours['scoring']:,.1f} scoring)")
    print(f"at {rates[0]:g} sampled, {rates[1]:g} trained and {rates[2]:g} scored tokens/s per GPU. "
          "Tokens are upper bounds: every sequence at its token limit, U1 and U2 at their largest. Every run is "
          "counted with its own iteration-1 samples and iteration-0 evaluation, which runs with equal settings "
          "share, so the real total is lower.")
    _print_disk(config, rows, args)
    unknown = sorted({name for row in rows for name in row.unknown})
    if unknown:
        print(f"Not counted (size unknown until the data is prepared): {', '.join(unknown)}; "
              "give them with --size DOMAIN.DATASET=ROWS.")
    return 0


def _print_disk(config: dict[str, Any], rows: list[Row], args: argparse.Namespace) -> None:
    """Disk per run (workflow/disk.py): checkpoints left at the end and the most held at once, with sampled text."""
    from tabulate import tabulate

    from envisions_flow.workflow.disk import gigabytes, parameter_count, run_disk

    parameters = int(args.parameters) if args.parameters else parameter_count(config, Path(args.results))
    checkpoint = int(parameters * args.checkpoint_bytes_per_parameter) if parameters else None
    runs = _summary(rows)
    disks = [run_disk(config, row.domain, row.run, row.sampling, checkpoint) for row in runs]
    table = [[disk.domain, disk.run, disk.checkpoints_at_end, gigabytes(disk.at_end()), disk.checkpoints_at_most,
              gigabytes(disk.at_most())] for disk in disks]
    print("\n" + tabulate(table, headers=["domain", "run", "checkpoints kept", "disk at the end ≤",
                                           "checkpoints at once ≤", "disk at most ≤"],
                           tablefmt="github", disable_numparse=True))
    if checkpoint is None:
        print("Disk: the model's size is unknown until it is converted (results/models/base) or on this machine; "
              "give it with --parameters.")
        return
    base = parameters * (2 if config["model"].get("gguf_file") else args.checkpoint_bytes_per_parameter)
    at_end = base + sum(disk.at_end() or 0 for disk in disks)
    print(f"Disk: {parameters / 1e6:,.0f}M parameters, {gigabytes(checkpoint)} per checkpoint at "
          f"{args.checkpoint_bytes_per_parameter:g} bytes per parameter; the base model {gigabytes(int(base))}; "
          f"all runs at the end ≤ {gigabytes(int(at_end))} (runs hold their peaks at different times).")


def _summary(rows: list[Row]) -> list[Row]:
    """One row per (domain, run), summed over its iterations; `iteration` holds how many it has."""
    merged: dict[tuple[str, str], Row] = {}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        key = (row.domain, row.run)
        total = merged.setdefault(key, Row(row.domain, row.run, 0))
        for stage in ("explore", "refine", "evaluate", "judge", "train", "margins"):
            setattr(total, stage, getattr(total, stage) + getattr(row, stage))
        counts[key] = max(counts[key], row.iteration)
    for key, total in merged.items():
        total.iteration = counts[key]
    return list(merged.values())


if __name__ == "__main__":
    sys.exit(main())
