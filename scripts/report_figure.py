from envisions_flow.logs import rule_job
from envisions_flow.report import figure

with rule_job(snakemake):
    figure(
        snakemake.params.figure,
        snakemake.params.runs,
        snakemake.output.png,
        snakemake.output.svg,
    )
