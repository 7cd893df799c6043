from envisions_flow.logs import rule_job
from envisions_flow.stages import warmup

with rule_job(snakemake):
    warmup(snakemake.config, snakemake.wildcards.run, snakemake.input[0], snakemake.output[0])
