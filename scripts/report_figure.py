from envisions_flow.report.figures import figure
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    figure(
        snakemake.wildcards.item,
        snakemake.params.runs,
        snakemake.output.png,
        snakemake.output.svg,
    )
