from envisions_flow.logs import rule_job
from envisions_flow.stages import prepare_data

with rule_job(snakemake):
    prepare_data(snakemake.config, snakemake.wildcards.domain, snakemake.wildcards.dataset, snakemake.output[0])
