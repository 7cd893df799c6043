from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/data.smk"
include: "rules/explore.smk"
include: "rules/refine.smk"
include: "rules/execute.smk"
include: "rules/select.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/analysis.smk"
include: "rules/agents.smk"
include: "rules/ipr.smk"
include: "rules/mixture.smk"
include: "rules/report.smk"


check_memory_plan()


rule all:
    default_target: True
    input:
        default_targets(),
