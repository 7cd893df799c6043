from envisions_flow.logs import rule_job
from envisions_flow.stages import train

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
