from envisions_flow.stages.evaluate import evaluate
from envisions_flow.workflow.logs import rule_job

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
