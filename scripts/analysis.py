from envisions_flow.logs import rule_job
from envisions_flow.stages import analyze

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
