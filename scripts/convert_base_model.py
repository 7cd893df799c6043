from envisions_flow.logs import rule_job
from envisions_flow.models import convert_base_model

with rule_job(snakemake):
    convert_base_model(snakemake.params.model, snakemake.output[0])
