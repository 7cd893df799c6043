from envisions_flow.logs import rule_job
from envisions_flow.stages import build_pool

with rule_job(snakemake):
    build_pool(
        snakemake.config,
        snakemake.wildcards.domain,
        int(snakemake.wildcards.iteration),
        snakemake.input.previous or None,
        snakemake.input.samples,
        snakemake.input.samples_exec,
        snakemake.input.refinements,
        snakemake.input.refinements_exec,
        snakemake.output[0],
    )
