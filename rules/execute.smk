rule execute:
    input:
        "results/{domain}/iter{iteration}/{stage}.parquet",
    output:
        "results/{domain}/iter{iteration}/{stage}.exec.parquet",
    params:
        settings=lambda wildcards: settings(wildcards, "execution"),
    wildcard_constraints:
        stage="samples|refinements",
    log:
        "results/logs/{domain}/iter{iteration}/execute.{stage}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    script:
        "../scripts/execute.py"
