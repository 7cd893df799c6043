rule execute:
    input:
        "results/{run}/iter{iteration}/{stage}.parquet",
    output:
        "results/{run}/iter{iteration}/{stage}.exec.parquet",
    log:
        "results/logs/{run}/iter{iteration}/execute.{stage}.log",
    wildcard_constraints:
        stage="samples|refinements",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    params:
        settings=stage_params("execute"),
    script:
        "../scripts/execute.py"
