"""Named runs: ENVISIONS, its baselines and ablations as strategies of one pipeline.

A run is a method (a preset of the `strategy` block) plus overrides of a domain's
settings. Its artifacts live under `results/{domain}/{name}/` (the default
ENVISIONS run under `results/{domain}/`). Every stage reads the strategy, so a
baseline is a different choice at a few points of the same pipeline, never a
copy of it:

- refine:  run self-refinement (Steps 4-6) and keep the better of (a, ã) (Eq. 2)
- pool:    accumulate trajectories across iterations (long-term memory)
- ranking: order positives by self-reward, or at random (w/o self-rewards)
- l2:      train on U2 pairs with the refine prompt (the RL-free loss L2)
- sft:     supervised fine-tuning on U1 every iteration, only at the first, or never
- dpo:     DPO on (a⁺, a⁻) pairs after SFT, the SFT model as the reference
- init:    train from the base model each iteration, or continue the previous checkpoint
- explorer: who writes the samples: the policy, or a teacher endpoint (distill-then-finetune)
- labels:  what decides a⁺ and a⁻: the environment, or the policy as its own judge (Self-Rewarding)
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

from envisions_flow.environments.registry import environment_class, environment_path, is_step_environment
from envisions_flow.workflow.config import ConfigError, domain_settings

DEFAULT_RUN = "envisions"

ENVISIONS = {"refine": True, "pool": True, "ranking": "self_reward", "l2": True, "sft": "every", "dpo": False,
             "init": "base", "explorer": "policy", "labels": "env"}

# Each method is ENVISIONS with the strategy keys it changes (paper Section 4.2, Table 3, Appendix C.9).
METHODS: dict[str, dict[str, Any]] = {
    "envisions": {},
    # the base model with the few-shot prompt: iteration 0 only
    "fewshot": {},
    # STaR + Env.: behaviour cloning on this iteration's positives, from the base model
    "star": {"refine": False, "pool": False, "ranking": "random", "l2": False},
    # iterative SFT+DPO: SFT on positives, then DPO on pairs, continuing the previous checkpoint
    "sft_dpo": {"refine": False, "l2": False, "dpo": True, "init": "previous"},
    # ETO: behaviour cloning once, then DPO on (success, failure) pairs from each exploration
    "eto": {"refine": False, "l2": False, "sft": "first", "dpo": True, "init": "previous"},
    # Self-Rewarding: the policy judges its own samples; DPO on judged pairs from the previous model
    "self_rewarding": {"refine": False, "pool": False, "l2": False, "sft": "never", "dpo": True,
                       "init": "previous", "labels": "judge"},
    # distill-then-finetune: one teacher answer per input, SFT on the correct ones
    "distill": {"refine": False, "pool": False, "l2": False, "explorer": "teacher"},
    # Table 3 ablations
    "no_refine": {"refine": False, "l2": False},
    "no_self_reward": {"ranking": "random"},
    "no_pool": {"pool": False},
    "no_l2": {"l2": False},
    # agent methods in step mode (agents.py), with their own stages (stages/agents.py, ipr.py, mixture.py; rules/ipr.smk, rules/mixture.smk)
    "ipr": {},
    "mixture": {},
}

# Methods that act one step at a time instead of writing whole programs: they need a StepEnvironment.
AGENT_METHODS = ("ipr", "mixture")
IPR_MAX_ITERATIONS = 4  # the paper's iteration cap


# Settings a method fixes besides its strategy (applied before the run's overrides).
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "fewshot": {"iterations": 0},
    "distill": {"iterations": 1, "explore": {"k": 1}},
    "ipr": {"iterations": IPR_MAX_ITERATIONS},
    "mixture": {"iterations": 1},
}


def method_strategy(method: str) -> dict[str, Any]:
    """The full strategy block of a method."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not implemented (available: {', '.join(sorted(METHODS))})")
    return {**ENVISIONS, **METHODS[method]}


def training_plan(strategy: dict[str, Any], iteration: int) -> dict[str, bool]:
    """Which losses an iteration trains with: SFT on U1, L2 on U2 (with SFT), DPO on U2."""
    sft = strategy["sft"] == "every" or (strategy["sft"] == "first" and iteration == 1)
    return {"sft": sft, "l2": sft and strategy["l2"], "dpo": strategy["dpo"]}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, nested mappings key by key."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def run_dir(domain: str, run: str) -> str:
    """Where a run's artifacts live, relative to results/."""
    return domain if run == DEFAULT_RUN else f"{domain}/{run}"


def parse_run_dir(path: str) -> tuple[str, str]:
    """(domain, run) of a run directory written by `run_dir`."""
    domain, _, run = path.partition("/")
    return domain, run or DEFAULT_RUN


def runs_of(config: dict[str, Any], domain: str) -> list[str]:
    """The runs configured for a domain, the default ENVISIONS run first."""
    names = [DEFAULT_RUN]
    for name, run in (config.get("runs") or {}).items():
        if domain in run.get("domains", config["domains"]):
            names.append(name)
    return names


def all_run_dirs(config: dict[str, Any]) -> Iterator[str]:
    for domain in config["domains"]:
        for run in runs_of(config, domain):
            yield run_dir(domain, run)


def method_of(config: dict[str, Any], run: str) -> str:
    return "envisions" if run == DEFAULT_RUN else config["runs"][run]["method"]


def is_agent_run(config: dict[str, Any], run: str) -> bool:
    """A run of a step-mode agent method (IPR, synthetic mixtures), built by its own rules."""
    return method_of(config, run) in AGENT_METHODS


def pipeline_run_dirs(config: dict[str, Any]) -> list[str]:
    """Run directories of the whole-program pipeline (ENVISIONS, its baselines and ablations)."""
    return [path for path in all_run_dirs(config) if not is_agent_run(config, parse_run_dir(path)[1])]


def agent_run_dirs(config: dict[str, Any]) -> list[str]:
    return [path for path in all_run_dirs(config) if is_agent_run(config, parse_run_dir(path)[1])]


def run_settings(config: dict[str, Any], domain: str, run: str) -> dict[str, Any]:
    """A domain's settings as this run sees them: method strategy, then the run's overrides.

    The domain's own `strategy` block applies to the default run only; a named run
    starts from its method's preset, so `method: star` always means STaR.
    """
    settings = domain_settings(config, domain)
    if run == DEFAULT_RUN:
        return {**settings, "strategy": {**ENVISIONS, **settings.get("strategy", {})}}
    if run not in (config.get("runs") or {}):
        raise ConfigError(f"runs.{run}: run is not configured")
    spec = config["runs"][run]
    if "replicate_of" in spec:  # the run it replicates, every seed moved on by (replicate - 1)
        original = run_settings(config, domain, spec["replicate_of"])
        shift = int(spec["replicate"]) - 1
        return deep_merge(original, {"seed_offset": int(original.get("seed_offset", 0)) + shift,
                                     "training": {"seed": int((original.get("training") or {}).get("seed", 0)) + shift}})
    preset = deep_merge({**settings, "strategy": method_strategy(spec["method"])},
                        METHOD_SETTINGS.get(spec["method"], {}))
    return deep_merge(preset, spec.get("overrides") or {})


def check_runs(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate every run's merged settings against the domain schema (overrides are free-form until merged)."""
    import jsonschema

    domain_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/domain"}
    # one validator for all runs: `jsonschema.validate` re-checks the whole schema on every call
    validator_class = jsonschema.validators.validator_for(domain_schema)
    validator_class.check_schema(domain_schema)
    validator = validator_class(domain_schema)
    for name, spec in (config.get("runs") or {}).items():
        unknown = set(spec.get("domains", [])) - set(config["domains"])
        if unknown:
            raise ConfigError(f"runs.{name}.domains: {sorted(unknown)} are not configured domains")
        for domain in spec.get("domains", config["domains"]):
            merged = deep_merge(domain_settings(config, domain), spec.get("overrides") or {})
            error = jsonschema.exceptions.best_match(validator.iter_errors(merged))
            if error is not None:
                where = ".".join(str(part) for part in error.absolute_path)
                raise ConfigError(f"runs.{name}.overrides.{where}: {error.message}") from None
            settings = run_settings(config, domain, name)
            if is_agent_run(config, name):
                _check_agent_run(config, name, domain, settings)
            if settings["strategy"]["explorer"] == "teacher":
                for key in ("base_url", "model"):
                    if not (settings.get("teacher") or {}).get(key):
                        raise ConfigError(f"runs.{name}.overrides.teacher.{key}: a teacher run needs the endpoint's "
                                          f"{key}")


def _check_agent_run(config: dict[str, Any], name: str, domain: str, settings: dict[str, Any]) -> None:
    """What an IPR or mixture run needs beyond the schema: a step-mode domain, the papers' iteration caps,
    and a source of expert or reference trajectories that exists."""
    method = config["runs"][name]["method"]
    path = environment_path(domain, settings)
    if not is_step_environment(environment_class(domain, settings)):
        raise ConfigError(f"runs.{name}.domains: {method} acts one step at a time, and the environment of {domain} "
                          f"({path}) has no step mode (`replay` and `step_instruction`: docs/environments.md)")
    iterations = int(settings["iterations"])
    if method == "ipr" and iterations > IPR_MAX_ITERATIONS:
        raise ConfigError(f"runs.{name}.overrides.iterations: IPR is capped at {IPR_MAX_ITERATIONS} iterations "
                          f"(got {iterations})")
    if method == "mixture" and iterations > (2 if settings["mixture"]["mixture"] == "a" else 1):
        raise ConfigError(f"runs.{name}.overrides.iterations: mixture {settings['mixture']['mixture'].upper()} has "
                          f"one round (mixture A an optional second: iterations 2)")
    source = settings["agent_source"]
    if source["teacher"]:
        for key in ("base_url", "model"):
            if not (settings.get("teacher") or {}).get(key):
                raise ConfigError(f"runs.{name}.overrides.teacher.{key}: agent_source.teacher needs the endpoint's {key}")
    elif source["run"] not in runs_of(config, domain) or is_agent_run(config, source["run"]):
        raise ConfigError(f"runs.{name}.overrides.agent_source.run: {source['run']!r} is not a whole-program run of "
                          f"domain {domain}")


def replicate_name(run: str, index: int) -> str:
    """The run that is replicate `index` (2, 3, ...) of `run`; replicate 1 is the run itself."""
    return f"{run}_rep{index}"


def with_replicates(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with each replicate of a run as a run of its own, so rule all, the report and the cost
    estimate see them: a run whose `replicates` is N in a domain gets the runs <run>_rep2 .. <run>_repN
    there, each the run itself with `seed_offset` and `training.seed` moved on by j - 1 (run_settings).

    Runs without iterations (few-shot: a greedy evaluation of a fixed model) are deterministic and
    are not replicated; agent runs (IPR, mixtures) are refused.
    """
    added: dict[str, dict[str, Any]] = {}
    for domain in config["domains"]:
        for run in runs_of(config, domain):
            settings = run_settings(config, domain, run)
            count = int(settings.get("replicates", 1))
            if count <= 1 or int(settings["iterations"]) == 0:
                continue
            if is_agent_run(config, run):
                raise ConfigError(f"runs.{run}.overrides.replicates: agent runs ({', '.join(AGENT_METHODS)}) "
                                  "are not replicated; set replicates: 1 for them")
            for index in range(2, count + 1):
                spec = added.setdefault(replicate_name(run, index), {
                    "method": method_of(config, run), "replicate_of": run, "replicate": index, "domains": []})
                spec["domains"].append(domain)
    if not added:
        return config
    expanded = {**config, "runs": {**(config.get("runs") or {}), **added}}
    if config.get("default_runs") is not None:
        expanded["default_runs"] = [*config["default_runs"],
                                    *(name for name, spec in added.items() if spec["replicate_of"] in config["default_runs"])]
    return expanded


def is_replicate(config: dict[str, Any], run: str) -> bool:
    """A run added by `with_replicates` (its results are reported with the run it replicates)."""
    return "replicate_of" in ((config.get("runs") or {}).get(run) or {})


def replicates_of(config: dict[str, Any], domain: str, run: str) -> list[str]:
    """The run and its replicates in a domain, in replicate order."""
    extra = [(int(spec["replicate"]), name) for name, spec in (config.get("runs") or {}).items()
             if spec.get("replicate_of") == run and domain in spec["domains"]]
    return [run, *(name for _, name in sorted(extra))]


def kept_iterations(settings: dict[str, Any]) -> set[int]:
    """Iterations whose checkpoint outlives the jobs that read it: the last, and those in keep_checkpoints
    ("all": every one); the others are removed once consumed (rules/train.smk)."""
    keep = settings.get("keep_checkpoints") or []
    last = int(settings["iterations"])
    if last == 0:
        return set()
    return set(range(1, last + 1)) if keep == "all" else {last, *(int(i) for i in keep if int(i) <= last)}


def first_policy(settings: dict[str, Any]) -> str | None:
    """The warm-up data set a run's first policy was fine-tuned on (Self-Rewarding), None for the base model."""
    if settings["strategy"]["labels"] == "judge":
        return (settings.get("self_rewarding") or {}).get("warmup")
    return None

