from envisions_flow.logs import rule_job
from envisions_flow.report import environment

with rule_job(snakemake):
    environment(snakemake.config, snakemake.output[0])
