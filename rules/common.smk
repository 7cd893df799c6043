import functools
import re

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from envisions_flow.workflow.artifacts import ArtifactError, check_results
from envisions_flow.workflow.config import (
    ConfigError,
    check,
    dataset_spec,
    domain_settings,
    drop_removed_testsets,
    train_dataset,
)
from envisions_flow.methods.mixture import mixture_parts
from envisions_flow.workflow.memory_plan import (
    check as memory_plan_check,
    rule_resources,
)
from envisions_flow.report.catalogue import FIGURES, REPORT_ITEMS, TABLES
from envisions_flow.environments.registry import sandbox_modes
from envisions_flow.environments.sandbox import SandboxUnavailable, check_sandboxes
from envisions_flow.workflow.dag import (
    BASE_MODEL,
    artifact_path,
    checkpoint_runs as dag_checkpoint_runs,
    data_params,
    model_params,
    report_entries as dag_report_entries,
    report_inputs as dag_report_inputs,
    rule_params,
    run_views,
)
from envisions_flow.workflow.runs import (
    agent_run_dirs,
    check_runs,
    method_of,
    pipeline_run_dirs,
    first_policy,
    parse_run_dir,
    run_dir,
    runs_of,
    with_replicates,
)

drop_removed_testsets(config)
try:
    check(config)
    with open(workflow.source_path("../config/schema.yaml")) as schema_file:
        check_runs(config, yaml.safe_load(schema_file))
    # each replicate of a run becomes a run of its own (<run>_rep2, ...), in place: scripts read this config
    config.update(with_replicates(config))
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}")

if workflow.is_main_process:  # once per invocation, not again inside each cluster job
    try:
        check_results("results")
    except ArtifactError as error:
        raise WorkflowError(f"damaged result of an earlier run: {error}")
    try:  # a kernel without a layer of the sandbox stops the run here, before any job
        sandbox_layers = check_sandboxes(sandbox_modes(config))
    except SandboxUnavailable as error:
        raise WorkflowError(f"sandbox: {error}")
    if sandbox_layers:
        logger.info(sandbox_layers)

DOMAINS = list(config["domains"])
DEFAULT_DOMAINS = config.get("default_domains", DOMAINS)
if set(DEFAULT_DOMAINS) - set(DOMAINS):
    raise WorkflowError(
        f"invalid configuration: default_domains names unconfigured domains "
        f"{sorted(set(DEFAULT_DOMAINS) - set(DOMAINS))}"
    )
DEFAULT_RUNS = config.get("default_runs")
unknown_runs = set(DEFAULT_RUNS or []) - {"envisions", *(config.get("runs") or {})}
if unknown_runs:
    raise WorkflowError(
        f"invalid configuration: default_runs names unconfigured runs {sorted(unknown_runs)}"
    )
RUN_DIRS = pipeline_run_dirs(config)
AGENT_RUN_DIRS = agent_run_dirs(config)


# {run} is a whole-program run's directory under results/: "math" for the default ENVISIONS run,
# "math/star" for a named run; {agent_run} one of an agent run (IPR, mixtures): "web/ipr".
wildcard_constraints:
    domain="|".join(DOMAINS),
    run="|".join(re.escape(path) for path in RUN_DIRS),
    agent_run="|".join(re.escape(path) for path in AGENT_RUN_DIRS) or "(?!)",
    iteration=r"\d+",
    dataset=r"[^/]+",


VIEWS = run_views(
    config
)  # each run's settings (its view), computed once: the config is fixed


def settings_of(run):
    """A run's merged settings (the view its stages' settings objects are resolved from)."""
    return VIEWS[run]


def strategy(run):
    return VIEWS[run]["strategy"]


@functools.cache
def stage_params_of(rule_name, run):
    return rule_params(VIEWS[run], rule_name)


def stage_params(rule_name):
    """A rule's params: its stage's settings object as a plain dict (the rerun trigger)."""
    return lambda wildcards: stage_params_of(
        rule_name, getattr(wildcards, "run", None) or wildcards.agent_run
    )


@functools.cache
def artifact(run, iteration, name, extension="parquet"):
    """The path of a run's artifact, read from the first run with equal settings where it can be shared."""
    return artifact_path(VIEWS, run, iteration, name, extension)


def train_data(wildcards):
    """The tasks iteration i explores: the domain's train set, or its own fresh episodes (web)."""
    domain = parse_run_dir(wildcards.run)[0]
    name = train_dataset(config, domain, int(wildcards.iteration))
    return f"results/{domain}/data/{name}.parquet"


def checkpoint_dir(run, iteration):
    return f"results/{run}/iter{iteration}/checkpoint"


def checkpoint_runs(kept):
    """The {run} pattern of the checkpoints a run keeps (`kept`) or removes once read (workflow/dag.py)."""
    return dag_checkpoint_runs({path: VIEWS[path] for path in RUN_DIRS}, kept)


def first_model(run):
    """The policy before iteration 1: the base model, or its warm-up fine-tune (Self-Rewarding)."""
    if first_policy(settings_of(run)):
        return f"results/{run}/warmup/checkpoint"
    return BASE_MODEL


def policy_for_sampling(wildcards):
    """Iteration 1 samples with the first policy, iteration i with the checkpoint of i-1."""
    iteration = int(wildcards.iteration)
    if iteration <= 1:
        return first_model(wildcards.run)
    return checkpoint_dir(wildcards.run, iteration - 1)


def policy_for_eval(wildcards):
    """Iteration 0 is the untrained base model; iteration i is its checkpoint."""
    iteration = int(wildcards.iteration)
    return BASE_MODEL if iteration == 0 else checkpoint_dir(wildcards.run, iteration)


def init_model(wildcards):
    """ENVISIONS trains the base model from scratch; continual methods the previous checkpoint."""
    iteration = int(wildcards.iteration)
    if strategy(wildcards.run)["init"] == "previous":
        return (
            checkpoint_dir(wildcards.run, iteration - 1)
            if iteration > 1
            else first_model(wildcards.run)
        )
    return BASE_MODEL


def select_inputs(wildcards):
    """The pool; and for runs labelled by their own judge, the samples and their judgments."""
    run, iteration = wildcards.run, wildcards.iteration
    inputs = {"pool": f"results/{run}/iter{iteration}/pool.parquet"}
    if strategy(run)["labels"] == "judge":
        inputs["samples"] = artifact(run, iteration, "samples")
        inputs["judgments"] = f"results/{run}/iter{iteration}/judgments.parquet"
    return inputs


def explored(wildcards):
    return artifact(wildcards.run, wildcards.iteration, "samples")


def pool_inputs(wildcards):
    """This iteration's judged trajectories, and the previous pool when the run keeps one."""
    run, iteration = wildcards.run, int(wildcards.iteration)
    inputs = {
        "samples": artifact(run, iteration, "samples"),
        "samples_exec": artifact(run, iteration, "samples.exec"),
    }
    if strategy(run)["refine"]:
        inputs["refinements"] = artifact(run, iteration, "refinements")
        inputs["refinements_exec"] = artifact(run, iteration, "refinements.exec")
    if strategy(run)["pool"] and iteration > 1:
        inputs["previous"] = f"results/{run}/iter{iteration - 1}/pool.parquet"
    return inputs


def testset_names(domain):
    return list(domain_settings(config, domain)["testsets"])


def testset_files(wildcards):
    return testset_files_of(wildcards.run)


def iterations(run):
    return int(settings_of(run)["iterations"])


def run_results(wildcards):
    """Everything a run's summary and analysis read: evals, judged trajectories, pools, Δlog p."""
    run = wildcards.run
    last = iterations(run)
    stages = ["samples.exec"] + (
        ["refinements.exec"] if strategy(run)["refine"] else []
    )
    return {
        "evals": [artifact(run, i, "eval", "json") for i in range(last + 1)],
        # per-item predictions beside each eval.json: the intervals are computed from them
        "eval_items": [artifact(run, i, "eval") for i in range(last + 1)],
        "executions": [
            artifact(run, i, stage) for i in range(1, last + 1) for stage in stages
        ],
        "pools": [f"results/{run}/iter{i}/pool.parquet" for i in range(1, last + 1)],
        "margins": [
            f"results/{run}/iter{i}/margins.parquet" for i in range(1, last + 1)
        ],
    }


def default_targets():
    """Summary and analysis of every default run of the default domains (agent runs: their summary)."""
    return [
        f"results/{directory}/{name}"
        for domain in DEFAULT_DOMAINS
        for run in runs_of(config, domain)
        if DEFAULT_RUNS is None or run in DEFAULT_RUNS
        for directory in [run_dir(domain, run)]
        for name in (
            ("summary.md",)
            if directory in AGENT_RUN_DIRS
            else ("summary.md", "analysis.parquet")
        )
    ]


# ---- agent runs (rules/agents.smk, ipr.smk, mixture.smk) ----------------------------------------


def agent_method(agent_run):
    return method_of(config, parse_run_dir(agent_run)[1])


def runs_pattern(method):
    """A wildcard pattern matching the agent runs of one method (never matching when there are none)."""
    paths = [path for path in AGENT_RUN_DIRS if agent_method(path) == method]
    return "|".join(re.escape(path) for path in paths) or "(?!)"


IPR_RUNS = runs_pattern("ipr")
MIXTURE_RUNS = runs_pattern("mixture")


def agent_train_tasks(wildcards):
    """The train set an agent run's iteration acts on (fresh episodes each iteration on the web)."""
    domain = parse_run_dir(wildcards.agent_run)[0]
    return f"results/{domain}/data/{train_dataset(config, domain, int(wildcards.iteration))}.parquet"


def mixture_train_inputs(wildcards):
    """Mixture A trains on in-domain data, C on out-of-domain, B on both; round 2 (A) continues round 1."""
    run, iteration = wildcards.agent_run, int(wildcards.iteration)
    indomain, synthetic = mixture_parts(settings_of(run)["mixture"]["mixture"])
    inputs = {
        "init": BASE_MODEL if iteration == 1 else previous_agent_policy(wildcards)
    }
    if indomain:
        inputs["indomain"] = f"results/{run}/iter{iteration}/indomain.parquet"
    if synthetic:
        inputs["synthetic"] = f"results/{run}/iter{iteration}/synthetic.parquet"
    return inputs


def source_run(agent_run):
    """The whole-program run whose successes an agent run learns from or compares to."""
    domain = parse_run_dir(agent_run)[0]
    return run_dir(domain, settings_of(agent_run)["agent_source"]["run"])


def train_task_files(agent_run):
    """Every iteration's train set of the source run (fresh episodes each iteration on the web)."""
    domain = parse_run_dir(agent_run)[0]
    last = (
        1
        if settings_of(agent_run)["agent_source"]["teacher"]
        else iterations(source_run(agent_run))
    )
    names = {train_dataset(config, domain, i) for i in range(1, last + 1)}
    return [f"results/{domain}/data/{name}.parquet" for name in sorted(names)]


def agent_source_inputs(kind):
    """What `experts.parquet` (train tasks, the source's pools) or `references.parquet` (test tasks, its
    evaluations) are made from; the teacher needs only the tasks."""

    def inputs(wildcards):
        run = wildcards.agent_run
        domain = parse_run_dir(run)[0]
        tasks = (
            train_task_files(run)
            if kind == "experts"
            else [
                f"results/{domain}/data/{name}.parquet"
                for name in testset_names(domain)
            ]
        )
        if settings_of(run)["agent_source"]["teacher"]:
            return {"tasks": tasks, "programs": []}
        source, last = source_run(run), iterations(source_run(run))
        programs = (
            [f"results/{source}/iter{i}/pool.parquet" for i in range(1, last + 1)]
            if kind == "experts"
            else [artifact(source, i, "eval") for i in range(last + 1)]
        )
        return {"tasks": tasks, "programs": programs}

    return inputs


def agent_policy(wildcards, iteration=None):
    """The policy an agent run acts with after `iteration` steps of training (0: its starting point):
    IPR starts from its SFT agent, a mixture run from the base model."""
    iteration = int(wildcards.iteration) if iteration is None else iteration
    if iteration > 0:
        return f"results/{wildcards.agent_run}/iter{iteration}/checkpoint"
    if agent_method(wildcards.agent_run) == "ipr":
        return f"results/{wildcards.agent_run}/sft/checkpoint"
    return BASE_MODEL


def previous_agent_policy(wildcards):
    return agent_policy(wildcards, int(wildcards.iteration) - 1)


def agent_eval_inputs(wildcards):
    """The policy and test sets; IPR's scorer (its SFT agent), a mixture run's references."""
    run = wildcards.agent_run
    inputs = {"model": agent_policy(wildcards), "testsets": testset_files_of(run)}
    if agent_method(run) == "ipr":
        inputs["scorer"] = f"results/{run}/sft/checkpoint"
    else:
        inputs["references"] = f"results/{run}/references.parquet"
    return inputs


def testset_files_of(run):
    domain = parse_run_dir(run)[0]
    return [f"results/{domain}/data/{name}.parquet" for name in testset_names(domain)]


def agent_results(wildcards):
    run = wildcards.agent_run
    return [f"results/{run}/iter{i}/eval.json" for i in range(iterations(run) + 1)]


def report_entries(item):
    return dag_report_entries(config, VIEWS, item)


def report_inputs(item):
    return dag_report_inputs(config, VIEWS, item)


def caption_of(item):
    """A table's or figure's caption (report/<item>.rst), shown by report/item.rst in the HTML report."""
    with open(workflow.source_path(f"../report/{item}.rst")) as caption:
        return caption.read()


def check_memory_plan():
    """Once all rules are defined, stop before any job when a GPU rule cannot fit what its job gets."""
    if not workflow.is_main_process:
        return
    resources = {
        defined.name: rule_resources(
            {
                name: getattr(value, "value", value)
                for name, value in defined.resources.items()
                if not getattr(value, "is_evaluable", lambda: callable(value))()
            },
            config,
        )
        for defined in workflow.rules
    }
    try:
        memory_plan_check(config, resources)
    except ConfigError as error:
        raise WorkflowError(f"memory plan: {error}")
