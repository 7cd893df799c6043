from envisions_flow.stages.select import select
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    select(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input[0],  # the pool
        snakemake.output.u1,
        snakemake.output.u2,
        snakemake.input.get("samples"),
        snakemake.input.get("judgments"),
    )
