from envisions_flow.logs import rule_job
from envisions_flow.stages import select

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
