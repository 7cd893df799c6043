from envisions_flow.stages.agents import source_trajectories
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    source_trajectories(
        snakemake.config,
        snakemake.wildcards.agent_run,
        snakemake.input.programs,
        "pool" if snakemake.wildcards.kind == "experts" else "eval",
        snakemake.input.tasks,
        snakemake.output[0],
    )
