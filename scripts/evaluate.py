from envisions_flow.logs import rule_job
from envisions_flow.stages import evaluate

with rule_job(snakemake):
    evaluate(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.model,
        snakemake.params.testsets,
        snakemake.input.testsets,
        snakemake.output.json,
        snakemake.output.parquet,
    )
