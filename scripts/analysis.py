from envisions_flow.stages.analysis import analyze
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    analyze(
        snakemake.config,
        snakemake.wildcards.run,
        snakemake.input.evals,
        snakemake.input.executions,
        snakemake.input.pools,
        snakemake.input.margins,
        snakemake.output[0],
    )
