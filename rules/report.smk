# Report: the paper's tables and figures from the configured runs (src/envisions_flow/report/).
# Each rule reads exactly the files of the runs it compares: `snakemake results/report/table2.md`
# builds only what Table 2 needs. `snakemake report_all`, then `snakemake --report report.html`.


rule table2:
    input:
        report_inputs("table2"),
    output:
        md="results/report/table2.md",
        csv=report(
            "results/report/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
            subcategory="Table 2",
        ),
        tex="results/report/table2.tex",
    log:
        "results/logs/report/table2.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="table2",
        runs=report_entries("table2"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule table3:
    input:
        report_inputs("table3"),
    output:
        md="results/report/table3.md",
        csv=report(
            "results/report/table3.csv",
            caption="../report/table3.rst",
            category="Tables",
            subcategory="Table 3",
        ),
        tex="results/report/table3.tex",
    log:
        "results/logs/report/table3.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="table3",
        runs=report_entries("table3"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule table5:
    input:
        report_inputs("table5"),
    output:
        md="results/report/table5.md",
        csv=report(
            "results/report/table5.csv",
            caption="../report/table5.rst",
            category="Tables",
            subcategory="Table 5",
        ),
        tex="results/report/table5.tex",
    log:
        "results/logs/report/table5.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="table5",
        runs=report_entries("table5"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule table8:
    input:
        report_inputs("table8"),
    output:
        md="results/report/table8.md",
        csv=report(
            "results/report/table8.csv",
            caption="../report/table8.rst",
            category="Tables",
            subcategory="Table 8",
        ),
        tex="results/report/table8.tex",
    log:
        "results/logs/report/table8.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="table8",
        runs=report_entries("table8"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule table9:
    input:
        report_inputs("table9"),
    output:
        md="results/report/table9.md",
        csv=report(
            "results/report/table9.csv",
            caption="../report/table9.rst",
            category="Tables",
            subcategory="Table 9",
        ),
        tex="results/report/table9.tex",
    log:
        "results/logs/report/table9.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="table9",
        runs=report_entries("table9"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule table11:
    input:
        report_inputs("table11"),
    output:
        md="results/report/table11.md",
        csv=report(
            "results/report/table11.csv",
            caption="../report/table11.rst",
            category="Tables",
            subcategory="Table 11",
        ),
        tex="results/report/table11.tex",
    log:
        "results/logs/report/table11.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="table11",
        runs=report_entries("table11"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule fig_accuracy:
    input:
        report_inputs("figures", "analysis"),
    output:
        png=report(
            "results/report/fig_accuracy.png",
            caption="../report/fig_accuracy.rst",
            category="Figures",
            subcategory="Fig. 3 and 6(a)",
        ),
        svg="results/report/fig_accuracy.svg",
    log:
        "results/logs/report/fig_accuracy.log",
    conda:
        "../envs/cpu.yaml"
    params:
        figure="fig_accuracy",
        runs=report_entries("figures", "analysis"),
    script:
        "../scripts/report_figure.py"


rule fig_explored:
    input:
        report_inputs("figures", "analysis"),
    output:
        png=report(
            "results/report/fig_explored.png",
            caption="../report/fig_explored.rst",
            category="Figures",
            subcategory="Fig. 6(b)",
        ),
        svg="results/report/fig_explored.svg",
    log:
        "results/logs/report/fig_explored.log",
    conda:
        "../envs/cpu.yaml"
    params:
        figure="fig_explored",
        runs=report_entries("figures", "analysis"),
    script:
        "../scripts/report_figure.py"


rule fig_ea_stb:
    input:
        report_inputs("figures", "analysis"),
    output:
        png=report(
            "results/report/fig_ea_stb.png",
            caption="../report/fig_ea_stb.rst",
            category="Figures",
            subcategory="Fig. 5(a)",
        ),
        svg="results/report/fig_ea_stb.svg",
    log:
        "results/logs/report/fig_ea_stb.log",
    conda:
        "../envs/cpu.yaml"
    params:
        figure="fig_ea_stb",
        runs=report_entries("figures", "analysis"),
    script:
        "../scripts/report_figure.py"


rule fig_delta_logp:
    input:
        report_inputs("figures", "analysis"),
    output:
        png=report(
            "results/report/fig_delta_logp.png",
            caption="../report/fig_delta_logp.rst",
            category="Figures",
            subcategory="Fig. 5(b)",
        ),
        svg="results/report/fig_delta_logp.svg",
    log:
        "results/logs/report/fig_delta_logp.log",
    conda:
        "../envs/cpu.yaml"
    params:
        figure="fig_delta_logp",
        runs=report_entries("figures", "analysis"),
    script:
        "../scripts/report_figure.py"


rule fig_unique:
    input:
        report_inputs("figures", "analysis"),
    output:
        png=report(
            "results/report/fig_unique.png",
            caption="../report/fig_unique.rst",
            category="Figures",
            subcategory="Fig. 5(c)",
        ),
        svg="results/report/fig_unique.svg",
    log:
        "results/logs/report/fig_unique.log",
    conda:
        "../envs/cpu.yaml"
    params:
        figure="fig_unique",
        runs=report_entries("figures", "analysis"),
    script:
        "../scripts/report_figure.py"


rule ipr_table2:
    input:
        report_inputs("ipr_table2", "evals"),
    output:
        md="results/report/ipr_table2.md",
        csv=report(
            "results/report/ipr_table2.csv",
            caption="../report/ipr_table2.rst",
            category="Agent methods",
            subcategory="IPR Table 2",
        ),
        tex="results/report/ipr_table2.tex",
    log:
        "results/logs/report/ipr_table2.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="ipr_table2",
        runs=report_entries("ipr_table2", "evals"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule ipr_table4:
    input:
        report_inputs("ipr_table4", "evals"),
    output:
        md="results/report/ipr_table4.md",
        csv=report(
            "results/report/ipr_table4.csv",
            caption="../report/ipr_table4.rst",
            category="Agent methods",
            subcategory="IPR Table 4",
        ),
        tex="results/report/ipr_table4.tex",
    log:
        "results/logs/report/ipr_table4.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="ipr_table4",
        runs=report_entries("ipr_table4", "evals"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


rule mixture_table3:
    input:
        report_inputs("mixture_table3", "evals"),
    output:
        md="results/report/mixture_table3.md",
        csv=report(
            "results/report/mixture_table3.csv",
            caption="../report/mixture_table3.rst",
            category="Agent methods",
            subcategory="Mixture Table 3",
        ),
        tex="results/report/mixture_table3.tex",
    log:
        "results/logs/report/mixture_table3.log",
    conda:
        "../envs/cpu.yaml"
    params:
        table="mixture_table3",
        runs=report_entries("mixture_table3", "evals"),
        report=config.get("report", {}),
    script:
        "../scripts/report_table.py"


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
            "results/report/{table}.{extension}",
            table=[
                "table2",
                "table3",
                "table5",
                "table8",
                "table9",
                "table11",
                "ipr_table2",
                "ipr_table4",
                "mixture_table3",
            ],
            extension=["md", "csv", "tex"],
        ),
        expand(
            "results/report/{figure}.{extension}",
            figure=[
                "fig_accuracy",
                "fig_explored",
                "fig_ea_stb",
                "fig_delta_logp",
                "fig_unique",
            ],
            extension=["png", "svg"],
        ),
        "results/report/environment.md",
