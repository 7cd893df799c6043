from envisions_flow.stages.select import judge
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    judge(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.samples,
        snakemake.input.model,
        snakemake.output[0],
    )
