from snakemake.exceptions import WorkflowError

from envisions_flow.config import ConfigError, check, dataset_spec, domain_settings

try:
    check(config)
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}")

DOMAINS = list(config["domains"])
DEFAULT_DOMAINS = config.get("default_domains", DOMAINS)
if set(DEFAULT_DOMAINS) - set(DOMAINS):
    raise WorkflowError(
        f"invalid configuration: default_domains names unconfigured domains "
        f"{sorted(set(DEFAULT_DOMAINS) - set(DOMAINS))}"
    )
BASE_MODEL = "results/models/base"


wildcard_constraints:
    domain="|".join(DOMAINS),
    iteration=r"\d+",


def settings(wildcards, *keys):
    """A domain's settings block (or the sub-blocks named), as rule params for rerun triggers."""
    block = domain_settings(config, wildcards.domain)
    return {key: block[key] for key in keys} if keys else block


def policy_for_sampling(wildcards):
    """Iteration 1 samples with the base model, iteration i with the checkpoint of i-1."""
    iteration = int(wildcards.iteration)
    if iteration <= 1:
        return BASE_MODEL
    return f"results/{wildcards.domain}/iter{iteration - 1}/checkpoint"


def policy_for_eval(wildcards):
    """Iteration 0 is the untrained base model; iteration i is its checkpoint."""
    iteration = int(wildcards.iteration)
    if iteration == 0:
        return BASE_MODEL
    return f"results/{wildcards.domain}/iter{iteration}/checkpoint"


def previous_pool(wildcards):
    iteration = int(wildcards.iteration)
    if iteration <= 1:
        return []
    return f"results/{wildcards.domain}/iter{iteration - 1}/pool.parquet"


def testset_names(domain):
    return list(domain_settings(config, domain)["testsets"])


def testset_files(wildcards):
    return [
        f"results/{wildcards.domain}/data/{name}.parquet"
        for name in testset_names(wildcards.domain)
    ]


def summary_inputs(wildcards):
    iterations = int(domain_settings(config, wildcards.domain)["iterations"])
    return {
        "evals": [
            f"results/{wildcards.domain}/iter{i}/eval.json"
            for i in range(iterations + 1)
        ],
        "pools": [
            f"results/{wildcards.domain}/iter{i}/pool.parquet"
            for i in range(1, iterations + 1)
        ],
    }
