rule margins:
    input:
        model="results/{run}/iter{iteration}/checkpoint",
        u2="results/{run}/iter{iteration}/u2.parquet",
    output:
        "results/{run}/iter{iteration}/margins.parquet",
    log:
        "results/logs/{run}/iter{iteration}/margins.log",
    priority: 1
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("margins"),
    script:
        "../scripts/margins.py"


rule analysis:
    input:
        unpack(run_results),
    output:
        "results/{run}/analysis.parquet",
    log:
        "results/logs/{run}/analysis.log",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=stage_params("analysis"),
    script:
        "../scripts/analysis.py"


rule summary:
    input:
        unpack(run_results),
    output:
        "results/{run}/summary.md",
    log:
        "results/logs/{run}/summary.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/summary.py"
