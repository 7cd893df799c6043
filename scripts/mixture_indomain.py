from envisions_flow.stages.mixture import mixture_indomain
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    mixture_indomain(
        snakemake.config,
        snakemake.wildcards.agent_run,
        int(snakemake.wildcards.iteration),
        snakemake.input.policy,
        snakemake.input.tasks,
        snakemake.output.trajectories,
        snakemake.output.summary,
    )
