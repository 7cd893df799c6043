from envisions_flow.logs import rule_job
from envisions_flow.stages import explore

with rule_job(snakemake):
    explore(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.tasks,
        snakemake.input.model,
        snakemake.output[0],
    )
