from envisions_flow.stages.mixture import mixture_train
from envisions_flow.workflow.logs import rule_job

with rule_job(snakemake):
    mixture_train(
        snakemake.config,
        snakemake.wildcards.agent_run,
        int(snakemake.wildcards.iteration),
        snakemake.input.init,
        snakemake.input.get("indomain"),
        snakemake.input.get("synthetic"),
        snakemake.output[0],
    )
