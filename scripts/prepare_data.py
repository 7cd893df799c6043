from envisions_flow.stages.data import prepare_data
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    prepare_data(snakemake.config, snakemake.wildcards.domain, snakemake.wildcards.dataset, snakemake.output[0])
