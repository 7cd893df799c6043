from envisions_flow.stages.train import train
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    train(
        snakemake.config,
        snakemake.wildcards.run,
        int(snakemake.wildcards.iteration),
        snakemake.input.init,
        snakemake.input.u1,
        snakemake.input.u2,
        snakemake.output[0],
    )
