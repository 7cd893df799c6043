from envisions_flow.logs import rule_job
from envisions_flow.report import write_table

with rule_job(snakemake):
    write_table(
        snakemake.config,
        snakemake.params.table,
        snakemake.params.runs,
        snakemake.output.md,
        snakemake.output.csv,
        snakemake.output.tex,
    )
