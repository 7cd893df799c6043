from envisions_flow.stages.refine import refine
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    refine(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.samples,
        snakemake.input.model,
        snakemake.output[0],
    )
