from envisions_flow.stages.explore import explore
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    explore(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.tasks,
        snakemake.input.model,
        snakemake.output[0],
    )
