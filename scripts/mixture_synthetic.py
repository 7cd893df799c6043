from envisions_flow.stages.mixture import mixture_synthetic
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    mixture_synthetic(
        snakemake.config,
        snakemake.wildcards.agent_run,
        int(snakemake.wildcards.iteration),
        snakemake.input.policy,
        snakemake.input.indomain,
        snakemake.output.trajectories,
        snakemake.output.summary,
    )
