from envisions_flow.logs import rule_job
from envisions_flow.stages import judge

with rule_job(snakemake):
    judge(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.samples,
        snakemake.input.model,
        snakemake.output[0],
    )
