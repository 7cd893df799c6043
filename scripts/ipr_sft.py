from envisions_flow.stages.ipr import ipr_sft
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    ipr_sft(
        snakemake.config,
        snakemake.wildcards.agent_run,
        snakemake.input.model,
        snakemake.input.experts,
        snakemake.output[0],
    )
