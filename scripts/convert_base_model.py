from envisions_flow.workflow.logs import rule_job
from envisions_flow.workflow.models import convert_base_model

with rule_job(snakemake):
    convert_base_model(snakemake.params.settings["model"], snakemake.output[0])
