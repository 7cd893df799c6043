# Report: the paper's tables and figures from the configured runs (src/envisions_flow/report/), one rule
# for every table and one for every figure, driven by report.catalogue.REPORT_ITEMS. Each job reads
# exactly the files of the runs its item compares: `snakemake results/report/table2.md` builds only what
# Table 2 needs. `snakemake report_all`, then `snakemake --report report.html report_all`.


rule report_table:
    input:
        lambda wildcards: report_inputs(wildcards.item),
    output:
        md="results/report/{item}.md",
        csv=report(
            "results/report/{item}.csv",
            caption="../report/item.rst",
            category=lambda wildcards: REPORT_ITEMS[wildcards.item].category,
            subcategory=lambda wildcards: REPORT_ITEMS[wildcards.item].subcategory,
        ),
        tex="results/report/{item}.tex",
    log:
        "results/logs/report/{item}.log",
    wildcard_constraints:
        item="|".join(TABLES),
    conda:
        "../envs/cpu.yaml"
    params:
        runs=lambda wildcards: report_entries(wildcards.item),
        report=config.get("report", {}),
        caption=lambda wildcards: caption_of(wildcards.item),
    script:
        "../scripts/report_table.py"


rule report_figure:
    input:
        lambda wildcards: report_inputs(wildcards.item),
    output:
        png=report(
            "results/report/{item}.png",
            caption="../report/item.rst",
            category=lambda wildcards: REPORT_ITEMS[wildcards.item].category,
            subcategory=lambda wildcards: REPORT_ITEMS[wildcards.item].subcategory,
        ),
        svg="results/report/{item}.svg",
    log:
        "results/logs/report/{item}.log",
    wildcard_constraints:
        item="|".join(FIGURES),
    conda:
        "../envs/cpu.yaml"
    params:
        runs=lambda wildcards: report_entries(wildcards.item),
        caption=lambda wildcards: caption_of(wildcards.item),
    script:
        "../scripts/report_figure.py"


rule report_environment:
    output:
        report(
            "results/report/environment.md",
            caption="../report/environment.rst",
            category="Environment",
        ),
    log:
        "results/logs/report/environment.log",
    conda:
        "../envs/cpu.yaml"
    params:
        config=config,
    script:
        "../scripts/report_environment.py"


rule report_all:
    input:
        expand(
            "results/report/{item}.{extension}",
            item=TABLES,
            extension=["md", "csv", "tex"],
        ),
        expand(
            "results/report/{item}.{extension}", item=FIGURES, extension=["png", "svg"]
        ),
        "results/report/environment.md",
