from envisions_flow.stages.execute import execute
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    execute(snakemake.config, snakemake.wildcards.run, snakemake.input[0], snakemake.output[0])
