from envisions_flow.agent_stages import agent_summary
from envisions_flow.logs import rule_job

with rule_job(snakemake):
    agent_summary(snakemake.input, snakemake.output[0])
