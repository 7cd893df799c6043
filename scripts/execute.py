from envisions_flow.logs import rule_job
from envisions_flow.stages import execute

with rule_job(snakemake):
    execute(snakemake.config, snakemake.wildcards.run, snakemake.input[0], snakemake.output[0])
