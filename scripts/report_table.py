from envisions_flow.report.tables import write_table
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    write_table(
        snakemake.config,
        snakemake.wildcards.item,
        snakemake.params.runs,
        snakemake.output.md,
        snakemake.output.csv,
        snakemake.output.tex,
    )
