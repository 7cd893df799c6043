from envisions_flow.stages.agents import agent_evaluate
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    agent_evaluate(
        snakemake.config,
        snakemake.wildcards.agent_run,
        int(snakemake.wildcards.iteration),
        snakemake.input.model,
        snakemake.params.testsets,
        snakemake.input.testsets,
        snakemake.output.json,
        snakemake.output.parquet,
        scorer=snakemake.input.get("scorer"),
        references=snakemake.input.get("references"),
    )
