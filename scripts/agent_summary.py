from envisions_flow.stages.agents import agent_summary
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    agent_summary(snakemake.input, snakemake.output[0])
