"""The workflow's decisions that rules/common.smk adapts to Snakemake: each rule's params (its stage's
settings object), which runs share an artifact, which checkpoints are kept, what a report item reads.

Everything here is a function of the (fixed) config, so common.smk caches it; it is tested without
Snakemake (tests/test_rerun_triggers.py, test_runs.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from envisions_flow.report.catalogue import REPORT_ITEMS, report_runs
from envisions_flow.stages import agent_settings as agent
from envisions_flow.stages import settings as stage
from envisions_flow.workflow.config import dataset_spec, domain_settings
from envisions_flow.workflow.runs import (
    first_policy,
    kept_iterations,
    parse_run_dir,
    replicates_of,
    run_dir,
    runs_of,
)

BASE_MODEL = "results/models/base"

# The settings object of the stage each run-level rule calls: its params, and its sharing key.
RULE_SETTINGS: dict[str, type] = {
    "explore": stage.ExploreSettings,
    "refine": stage.RefineSettings,
    "execute": stage.ExecuteSettings,
    "pool": stage.PoolSettings,
    "select": stage.SelectSettings,
    "judge": stage.JudgeSettings,
    "train": stage.TrainSettings,
    "train_transient": stage.TrainSettings,
    "warmup": stage.WarmupSettings,
    "evaluate": stage.EvaluateSettings,
    "margins": stage.MarginsSettings,
    "analysis": stage.AnalysisSettings,
    "agent_source": agent.AgentSourceSettings,
    "agent_evaluate": agent.AgentEvaluateSettings,
    "ipr_sft": agent.IprSftSettings,
    "ipr_explore": agent.IprExploreSettings,
    "ipr_train": agent.IprTrainSettings,
    "mixture_indomain": agent.MixtureIndomainSettings,
    "mixture_synthetic": agent.MixtureSyntheticSettings,
    "mixture_train": agent.MixtureTrainSettings,
}
# Rules whose stage reads no setting (only its input files) or that are not stages (targets, the report,
# whose params are the report's entries).
WITHOUT_SETTINGS = ("summary", "agent_summary", "all", "report_all", "report_table", "report_figure",
                    "report_environment")


def rule_params(view: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """A run-level rule's params: its stage's settings object resolved from the run's view, as a dict."""
    return stage.as_params(stage.resolve(RULE_SETTINGS[rule], view, f"{rule}: "))


def data_params(config: Mapping[str, Any], domain: str, dataset: str) -> dict[str, Any]:
    """prepare_data's params: the data set's spec and the environment class that loads it."""
    settings = domain_settings(config, domain)
    block = {"domain": domain, "spec": dataset_spec(config, domain, dataset), **(
        {"environment": settings["environment"]} if "environment" in settings else {})}
    return stage.as_params(stage.resolve(stage.DataSettings, block))


def model_params(config: Mapping[str, Any]) -> dict[str, Any]:
    return stage.as_params(stage.resolve(stage.ModelSettings, config))


def _signature(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def first_policy_key(view: Mapping[str, Any], run: str) -> Any:
    """What the policy before iteration 1 is: the base model, or this run's warm-up fine-tune of it."""
    return None if not first_policy(view) else ["warmup", run, rule_params(view, "warmup")]


def artifact_key(view: Mapping[str, Any], run: str, name: str) -> Any:
    """Everything a shareable artifact is made from: the producing stage's settings and, recursively, the
    keys of its inputs (iteration-1 samples from the first policy; refinements from the samples; their
    verdicts from them and the execution settings; iteration 0's eval from the base model)."""
    if name == "eval":
        return ["evaluate", rule_params(view, "evaluate")]
    policy = first_policy_key(view, run)
    samples = ["explore", rule_params(view, "explore"), policy]
    if name == "samples":
        return samples
    if name == "refinements":
        return ["refine", rule_params(view, "refine"), samples, policy]
    if name in ("samples.exec", "refinements.exec"):
        return ["execute", rule_params(view, "execute"), artifact_key(view, run, name.removesuffix(".exec"))]
    raise ValueError(f"{name}: not a shareable artifact")


SHAREABLE = {1: ("samples", "samples.exec", "refinements", "refinements.exec"), 0: ("eval",)}


def shared_run_dir(views: Mapping[str, Mapping[str, Any]], run: str, name: str) -> str:
    """The first run of the same domain (in config order; `views`: run directory -> view) whose artifact
    `name` would be made from the same settings and inputs as `run`'s: it is read from there."""
    own = _signature(artifact_key(views[run], run, name))
    domain = parse_run_dir(run)[0]
    for other, view in views.items():
        if parse_run_dir(other)[0] == domain and _signature(artifact_key(view, other, name)) == own:
            return other
    return run


def artifact_path(views: Mapping[str, Mapping[str, Any]], run: str, iteration: int | str, name: str,
                  extension: str = "parquet") -> str:
    """Where a run's artifact is read: from the first run with equal settings where it can be shared
    (iteration 1's samples and refinements and their verdicts, iteration 0's evaluation)."""
    iteration = int(iteration)
    if name in SHAREABLE.get(iteration, ()):
        run = shared_run_dir(views, run, name)
    return f"results/{run}/iter{iteration}/{name}.{extension}"


def checkpoint_runs(views: Mapping[str, Mapping[str, Any]], kept: bool) -> str:
    """A pattern for the {run} of `results/{run}/iter{iteration}/checkpoint` that matches only where that
    checkpoint is kept (`kept`), or only where it is removed once the jobs reading it are done: a
    lookahead on the iteration that follows, as a rule cannot mark some of its outputs temp()."""
    alternatives = []
    for path, view in views.items():
        numbers = "|".join(str(i) for i in sorted(kept_iterations(view))) or "(?!)"
        ahead = f"(?=/iter(?:{numbers})/checkpoint$)" if kept else f"(?!/iter(?:{numbers})/checkpoint$)"
        alternatives.append(re.escape(path) + ahead)
    return "|".join(alternatives)


def report_entries(config: Mapping[str, Any], views: Mapping[str, Mapping[str, Any]], item: str) -> list[list[Any]]:
    """(domain, run, path) of each run a table or figure compares: the last iteration's eval.json, every
    iteration's (an agent run's tables, also naming the iteration) or analysis.parquet; the report scripts
    read the run from here, not from the file, which may be shared with another run."""
    entries: list[list[Any]] = []
    reads = REPORT_ITEMS[item].reads
    for domain, run in report_runs(config, REPORT_ITEMS[item].runs):
        directory = run_dir(domain, run)
        if reads == "evals":
            entries += [[domain, run, i, f"results/{directory}/iter{i}/eval.json"]
                        for i in range(int(views[directory]["iterations"]) + 1)]
            continue
        for replicate in replicates_of(config, domain, run):  # one entry per replicate
            directory = run_dir(domain, replicate)
            if reads == "eval":
                path = artifact_path(views, directory, int(views[directory]["iterations"]), "eval", "json")
            else:
                path = f"results/{directory}/analysis.parquet"
            entries.append([domain, run, path])
    return entries


def report_inputs(config: Mapping[str, Any], views: Mapping[str, Mapping[str, Any]], item: str) -> list[str]:
    """The files `report_entries` names, each once, and the per-item eval.parquet beside each eval.json
    (the intervals and paired differences resample items): exactly what the table or figure reads."""
    paths = {entry[-1] for entry in report_entries(config, views, item)}
    items = ({path.removesuffix(".json") + ".parquet" for path in paths}
             if REPORT_ITEMS[item].reads == "eval" else set())
    return sorted(paths | items)


def run_views(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The view (settings.run_view) of every configured run, by run directory, in config order."""
    return {run_dir(domain, run): stage.run_view(config, run_dir(domain, run))
            for domain in config["domains"] for run in runs_of(config, domain)}

