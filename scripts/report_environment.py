from envisions_flow.report.environment.environment import environment
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    environment(snakemake.config, snakemake.output[0])
