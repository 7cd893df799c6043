from envisions_flow.stages.analysis import margins
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    margins(snakemake.config, snakemake.wildcards.run, snakemake.input.model, snakemake.input.u2, snakemake.output[0])
