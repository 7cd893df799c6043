from envisions_flow.stages.ipr import ipr_explore
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    ipr_explore(
        snakemake.config,
        snakemake.wildcards.agent_run,
        int(snakemake.wildcards.iteration),
        snakemake.input.policy,
        snakemake.input.scorer,
        snakemake.input.experts,
        snakemake.output.steps,
        snakemake.output.pairs,
    )
