from envisions_flow.stages.select import build_pool
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    build_pool(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.get("previous"),
        snakemake.input.samples,
        snakemake.input.samples_exec,
        snakemake.input.get("refinements"),
        snakemake.input.get("refinements_exec"),
        snakemake.output[0],
    )
