"""The memory plan: each GPU rule's peak memory under the resources its job gets, checked before any job starts.

For the configured model (its config.json, or `memory_plan.architecture`), every GPU rule the
configured runs use, per domain (the most demanding run decides), gets an estimate
(workflow/memory_model.py) of its peak memory on each GPU and in host memory per node: sampling
with the configured backend (explore, refine, evaluate, judge, the agent runs' rollouts),
training with the precision, ZeRO stage and checkpointing a job of that size resolves
(training/setup.py: `auto` switches ZeRO-3 and checkpointing on when needed), and scoring
(margins). The resources are the profile's (`gpu`, `nodes`, `mem_mb` and the GPU memory
`gpu_vram_mb` that profiles/slurm sets), else `memory_plan.gpus` / `gpu_memory_gb` /
`host_memory_gb`.

The start-up check (rules/common.smk) stops a run whose rule does not fit, naming the rule and the
key to change, only where the plan can know: when a rule has GPUs and their memory is known (the
Slurm profile, or `memory_plan.gpu_memory_gb`). A run on CPUs is never stopped.

    .venv/bin/python -m envisions_flow.workflow.memory_plan --configfile config/paper.yaml   # profiles/slurm
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from envisions_flow.training.setup import resolve
from envisions_flow.workflow.config import ConfigError
from envisions_flow.workflow.memory_model import (
    FIT_FRACTION,
    GIB,
    Estimate,
    ModelShape,
    model_shape,
    sampling_estimate,
    scoring_estimate,
    tensor_parallel_size,
    vllm_estimate,
)
from envisions_flow.workflow.runs import first_policy, is_agent_run, method_of, run_settings, runs_of, training_plan

MB = 1000**2
DEFAULT_UTILIZATION = 0.9  # vLLM's, as generation/vllm_backend.py uses it
GPU_RULES = ("explore", "refine", "evaluate", "judge", "margins", "train", "warmup", "agent_evaluate", "ipr_sft",
             "ipr_explore", "ipr_train", "mixture_indomain", "mixture_synthetic", "mixture_train")
# rules that run another rule's script as its twin (`use rule ... with`), so their jobs need the same resources
TWIN_RULES = {"train_transient": "train"}


@dataclass(frozen=True)
class Resources:
    """What one job of a rule gets: GPUs per node, nodes, memory of each GPU and host memory per node (bytes)."""

    gpus: int = 0
    nodes: int = 1
    gpu_memory: int | None = None
    host_memory: int | None = None

    def describe(self) -> str:
        if not self.gpus:
            return "CPU"
        memory = f" × {self.gpu_memory / GIB:.0f} GiB" if self.gpu_memory else ""
        return f"{self.nodes} × " * (self.nodes > 1) + f"{self.gpus}{memory}"


@dataclass(frozen=True)
class Row:
    """One GPU rule in one domain: its estimate under its resources, or why there is none."""

    rule: str
    domain: str
    run: str
    resources: Resources
    estimate: Estimate | None = None
    error: str | None = None
    change: str = ""

    @property
    def checked(self) -> bool:
        """Whether the plan can tell: a GPU job whose GPU memory is known."""
        return bool(self.resources.gpus) and self.resources.gpu_memory is not None

    @property
    def fits(self) -> bool:
        if self.error:
            return False
        assert self.estimate is not None
        return self.estimate.fits(self.resources.gpu_memory if self.resources.gpus else None,
                                  self.resources.host_memory)


def _mib(value: Any) -> int | None:
    return int(value) * MB if isinstance(value, (int, float)) and value > 0 else None


def rule_resources(values: Mapping[str, Any], config: Mapping[str, Any]) -> Resources:
    """A rule's resources from the profile's values, `memory_plan` filling what the profile does not say.

    GPUs: `gpu` (or `gpus`), or `--gpus-per-node=N` in `slurm_extra` (several nodes); GPU memory:
    `gpu_vram_mb`; host memory per node: `mem_mb`.
    """
    plan = config.get("memory_plan") or {}
    nodes = int(values.get("nodes") or 1)
    per_node = re.search(r"--gpus-per-node[= ](\d+)", str(values.get("slurm_extra") or ""))
    gpus = values.get("gpu", values.get("gpus"))
    if per_node:
        gpus = int(per_node.group(1))
    elif isinstance(gpus, int):
        gpus = gpus // nodes
    else:
        gpus = int(plan.get("gpus") or 0)
    gpu_memory = _mib(values.get("gpu_vram_mb")) or (int(plan["gpu_memory_gb"] * GIB) if plan.get("gpu_memory_gb") else None)
    host = _mib(values.get("mem_mb")) or (int(plan["host_memory_gb"] * GIB) if plan.get("host_memory_gb") else None)
    return Resources(gpus=gpus, nodes=nodes, gpu_memory=gpu_memory, host_memory=host)


def profile_resources(profile: str | Path, config: Mapping[str, Any]) -> dict[str, Resources]:
    """Each GPU rule's resources as a Snakemake profile gives them (a YTE template is rendered as Snakemake does)."""
    import yaml
    import yte

    path = Path(profile) / "config.yaml"
    text = path.read_text()
    data = yte.process_yaml(text) if "__use_yte__" in text else yaml.safe_load(text)
    defaults = _as_mapping(data.get("default-resources"))
    per_rule = data.get("set-resources") or {}
    return {rule: rule_resources({**defaults, **_as_mapping(per_rule.get(rule))}, config) for rule in GPU_RULES}


def _as_mapping(values: Any) -> dict[str, Any]:
    """Resources as a mapping, or as `name=value` strings (Snakemake takes both)."""
    if isinstance(values, Mapping):
        return dict(values)
    pairs = (item.split("=", 1) for item in values or [])
    return {name: int(value) if value.isdigit() else value for name, value in pairs}


def _sampling(shape: ModelShape, generation: Mapping[str, Any], resources: Resources, n: int,
              max_new_tokens: int, models: int = 1) -> tuple[Estimate | None, str | None, str]:
    on_gpu = resources.gpus > 0
    if generation["backend"] == "vllm" and on_gpu:
        try:
            tp = tensor_parallel_size(shape, resources.gpus, generation.get("tensor_parallel_size"))
        except ValueError as error:
            return None, str(error), "generation.tensor_parallel_size"
        length = int(generation.get("max_model_len") or shape.context)
        if length > shape.context:
            return None, (f"generation.max_model_len: {length} is longer than the model's context "
                          f"({shape.context})"), "generation.max_model_len"
        utilization = float(generation.get("gpu_memory_utilization") or DEFAULT_UTILIZATION) / models
        return (vllm_estimate(shape, tp, utilization, length), None,
                "generation.max_model_len, or more GPUs for tensor parallelism")
    dtype = {"auto": 2 if on_gpu else 4, "float32": 4}.get(generation["dtype"], 2)
    # "auto" decodes as many prompts together as the free memory holds (transformers_backend.auto_batch):
    # the job fits when one prompt's n samples do
    batch = n if generation["batch_size"] == "auto" else int(generation["batch_size"])
    estimate = sampling_estimate(shape, batch, n, max_new_tokens, dtype, models, on_gpu=on_gpu)
    largest = next((size for size in range(batch - 1, 0, -1)
                    if sampling_estimate(shape, size, n, max_new_tokens, dtype, models, on_gpu=on_gpu).fits(
                        resources.gpu_memory if on_gpu else None, resources.host_memory)), None)
    hint = f"generation.batch_size ({largest} fits)" if largest else "generation.backend: vllm, or a larger GPU"
    return estimate, None, hint


def _training(shape: ModelShape, training: Mapping[str, Any], resources: Resources, **kind: Any
              ) -> tuple[Estimate, None, str]:
    on_gpu = resources.gpus > 0
    nodes = int(training.get("nodes") or resources.nodes)
    world = int(training.get("processes_per_node") or max(1, resources.gpus)) * nodes
    setup, estimate = resolve(shape, training, world=world, nodes=nodes, on_gpu=on_gpu,
                              gpu_memory=resources.gpu_memory if on_gpu else None, **kind)
    forced = [f"training.{key}" for key in ("deepspeed_config", "gradient_checkpointing")
              if training.get(key, "auto") != "auto"]
    hint = "training.per_device_batch_size or training.max_length, or more GPUs"
    return estimate, None, (f"{' and '.join(forced)} to auto, or {hint}" if forced else hint)


def _work(config: Mapping[str, Any], domain: str, run: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """(rule, what one job does) for every GPU rule a run uses."""
    settings = run_settings(dict(config), domain, run)
    strategy, iterations = settings["strategy"], int(settings["iterations"])
    training = settings["training"]
    if is_agent_run(dict(config), run):
        steps = int(settings["steps"]["max_new_tokens"])
        method = method_of(dict(config), run)
        if method == "ipr":
            rollouts = int(settings["ipr"]["mc_rollouts"])
            yield "agent_evaluate", {"n": rollouts, "new": steps, "models": 2}
            yield "ipr_sft", {"training": training}
            yield "ipr_explore", {"n": rollouts, "new": steps, "models": 2}
            yield "ipr_train", {"training": training, "pairs": True}
        else:
            mixture = settings["mixture"]
            yield "agent_evaluate", {"n": 1, "new": steps}
            yield "mixture_indomain", {"n": int(mixture["samples_per_task"]), "new": steps}
            yield "mixture_synthetic", {"n": 1, "new": 4 * steps}
            yield "mixture_train", {"training": training, "lora": dict(mixture["lora"])}
        return
    evaluate = int(settings["eval"]["max_new_tokens"])
    if settings["eval"].get("self_refine"):
        evaluate = max(evaluate, int(settings["refine"]["max_new_tokens"]))
    yield "evaluate", {"n": 1, "new": evaluate}
    if iterations < 1:
        return
    if strategy["explorer"] == "policy":
        yield "explore", {"n": int(settings["explore"]["k"]), "new": int(settings["explore"]["max_new_tokens"])}
    if strategy["refine"]:
        yield "refine", {"n": 1, "new": int(settings["refine"]["max_new_tokens"])}
    if strategy["labels"] == "judge":
        judging = settings["self_rewarding"]
        yield "judge", {"n": int(judging["judge_samples"]), "new": int(judging["judge_max_new_tokens"])}
    if first_policy(settings):
        yield "warmup", {"training": training}
    if any(training_plan(strategy, i)["sft"] for i in range(1, iterations + 1)):
        yield "train", {"training": training}
    if strategy["dpo"]:
        yield "train", {"training": training, "pairs": True, "reference": True}
    yield "margins", {"score": True}


def plan(config: Mapping[str, Any], resources: Mapping[str, Resources], shape: ModelShape) -> list[Row]:
    """A row per GPU rule and domain: the most demanding job over the runs that use it."""
    rows: dict[tuple[str, str], Row] = {}
    for domain in config["domains"]:
        for run in runs_of(dict(config), domain):
            for rule, work in _work(config, domain, run):
                given = resources.get(rule, Resources())
                if "training" in work:
                    kind = {key: work[key] for key in ("pairs", "reference", "lora") if key in work}
                    estimate, error, change = _training(shape, work["training"], given, **kind)
                elif work.get("score"):
                    estimate, error, change = scoring_estimate(shape, 2 if given.gpus else 4, given.gpus > 0), None, \
                        "a GPU with more memory"
                else:
                    estimate, error, change = _sampling(shape, config["generation"], given, work["n"],
                                                        work["new"], work.get("models", 1))
                row = Row(rule, domain, run, given, estimate, error, change)
                known = rows.get((rule, domain))
                if known is None or row.error or (not known.error and row.estimate.device > known.estimate.device):
                    rows[(rule, domain)] = row
    return [rows[key] for key in sorted(rows, key=lambda key: (GPU_RULES.index(key[0]), key[1]))]


def check_training_keys(config: Mapping[str, Any]) -> None:
    """The packages and files the training keys of every run need: a DeepSpeed file, tensorboard, wandb."""
    for domain in config["domains"]:
        for run in runs_of(dict(config), domain):
            training = run_settings(dict(config), domain, run)["training"]
            key = f"domains.{domain}.training" if run == "envisions" else f"runs.{run}.overrides.training"
            report = training.get("report_to", "none")
            if report != "none" and importlib.util.find_spec(report) is None:
                install = "pip install -e '.[tracking]'" if report == "tensorboard" else f"pip install {report}"
                raise ConfigError(f"{key}.report_to: {report} needs the {report} package ({install})")
            deepspeed = training.get("deepspeed_config", "auto")
            if deepspeed not in ("auto", None) and not Path(deepspeed).is_file():
                raise ConfigError(f"{key}.deepspeed_config: {deepspeed} is not a file")


def check(config: Mapping[str, Any], resources: Mapping[str, Resources], results: str | Path = "results") -> None:
    """Raise ConfigError naming the first GPU rule that cannot fit, where the plan can know (`memory_plan.check`).

    The training keys' packages and files are checked first, wherever the run goes.
    """
    check_training_keys(config)
    for twin, original in TWIN_RULES.items():
        if twin in resources and original in resources and resources[twin] != resources[original]:
            raise ConfigError(f"rule {twin} (rule {original} for the checkpoints removed once read) gets {resources[twin]} "
                              f"but {original} gets {resources[original]}: give both the same resources (set-resources)")
    mode = (config.get("memory_plan") or {}).get("check", "auto")
    if mode is False or not any(r.gpus and r.gpu_memory for r in resources.values()):
        return
    shape, source = model_shape(config, results)
    if shape is None:
        if mode is True:
            raise ConfigError(f"memory_plan.check: {source}")
        return
    for row in plan(config, resources, shape):
        if row.checked and not row.fits:
            raise ConfigError(f"rule {row.rule} ({row.domain}, run {row.run}) cannot fit: {_verdict(row)}; "
                              f"change {row.change}. The whole plan: python -m envisions_flow.workflow.memory_plan")
        if row.checked and "ZeRO" in row.estimate.setting and importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"rule {row.rule} ({row.domain}) fits its GPUs with {row.estimate.setting} only, and "
                              "DeepSpeed is not installed: pip install 'envisions-flow[deepspeed]'")


def _verdict(row: Row) -> str:
    if row.error:
        return row.error
    estimate, given = row.estimate, row.resources
    where = []
    if given.gpus and given.gpu_memory and estimate.device > estimate.budget * given.gpu_memory:
        where.append(f"{estimate.device / GIB:.1f} GiB per GPU with {estimate.setting}, over "
                     f"{estimate.budget:.0%} of {given.gpu_memory / GIB:.0f} GiB")
    if given.host_memory and estimate.host > FIT_FRACTION * given.host_memory:
        where.append(f"{estimate.host / GIB:.1f} GiB of host memory, over {FIT_FRACTION:.0%} of the job's "
                     f"{given.host_memory / GIB:.0f} GiB (mem_mb)")
    return "; ".join(where)


def table(rows: list[Row]) -> str:
    from tabulate import tabulate

    lines = []
    for row in rows:
        given, estimate = row.resources, row.estimate
        host = f"{given.host_memory / GIB:.0f}" if given.host_memory else "?"
        if estimate is None:
            lines.append([row.rule, row.domain, row.run, given.describe(), row.error, "", "", "no"])
            continue
        device = f"{estimate.device / GIB:.1f}" if given.gpus else "—"
        verdict = ("yes" if row.fits else "no") if row.checked or given.host_memory else "?"
        lines.append([row.rule, row.domain, row.run, given.describe(), estimate.setting, device,
                      f"{estimate.host / GIB:.1f} / {host}", verdict])
    headers = ["rule", "domain", "peak run", "GPUs × memory", "holds the model as", "GiB per GPU",
               "host GiB / node", "fits"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    from envisions_flow.workflow.gpu_hours import load_config

    parser = argparse.ArgumentParser(description="Estimated peak memory of every GPU rule, per GPU and per node, "
                                                 "under the resources a profile gives it (see the module's docstring).")
    parser.add_argument("--configfile", nargs="*", default=[], help="config files merged over config/config.yaml")
    parser.add_argument("--base-config", default="config/config.yaml", help="the base config (default: %(default)s)")
    parser.add_argument("--profile", default="profiles/slurm", help="the Snakemake profile (default: %(default)s)")
    parser.add_argument("--results", default="results", help="where a converted base model is looked for")
    args = parser.parse_args(argv)
    try:
        config = load_config([args.base_config, *args.configfile])
        _fill_schema_defaults(config, Path(args.base_config).parent / "schema.yaml")
        shape, source = model_shape(config, args.results)
        if shape is None:
            raise ConfigError(source)
        rows = plan(config, profile_resources(args.profile, config), shape)
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Model: {shape.parameters / 1e9:.2f}B parameters, {shape.layers} layers, hidden {shape.hidden}, "
          f"{shape.heads} heads ({shape.kv_heads} KV), context {shape.context} (from {source}); "
          f"resources from {args.profile}.\n")
    print(table(rows))
    print(f"\nA rule fits when its estimate is at most {FIT_FRACTION:.0%} of a GPU's memory (vLLM: the share it is "
          f"given) and of its host memory; '?' where the profile does not say how much memory there is.")
    misfits = [row for row in rows if row.checked and not row.fits]
    for row in misfits:
        print(f"- {row.rule} ({row.domain}): {_verdict(row)}; change {row.change}")
    return 1 if misfits else 0


def _fill_schema_defaults(config: dict[str, Any], schema: Path) -> None:
    """The config as the workflow sees it: validated, the schema's defaults filled in (as the Snakefile does)."""
    from snakemake.utils import validate

    try:
        validate(config, str(schema))
    except Exception as error:  # noqa: BLE001 - snakemake's WorkflowError names the key at fault
        raise ConfigError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
