from envisions_flow.stages.analysis import summarize
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    summarize(snakemake.input.evals, snakemake.input.pools, snakemake.output[0])
