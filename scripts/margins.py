from envisions_flow.logs import rule_job
from envisions_flow.stages import margins

with rule_job(snakemake):
    margins(snakemake.config, snakemake.wildcards.run, snakemake.input.model, snakemake.input.u2, snakemake.output[0])
