from envisions_flow.stages.train import warmup
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    warmup(snakemake.config, snakemake.wildcards.run, snakemake.input[0], snakemake.output[0])
