from envisions_flow.stages.ipr import ipr_train
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    ipr_train(
        snakemake.config,
        snakemake.wildcards.agent_run,
        int(snakemake.wildcards.iteration),
        snakemake.input.policy,
        snakemake.input.reference,
        snakemake.input.pairs,
        snakemake.output[0],
    )
