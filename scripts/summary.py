from envisions_flow.logs import rule_job
from envisions_flow.stages import summarize

with rule_job(snakemake):
    summarize(snakemake.input.evals, snakemake.input.pools, snakemake.output[0])
