rule pool:
    input:
        previous=previous_pool,
        samples="results/{domain}/iter{iteration}/samples.parquet",
        samples_exec="results/{domain}/iter{iteration}/samples.exec.parquet",
        refinements="results/{domain}/iter{iteration}/refinements.parquet",
        refinements_exec="results/{domain}/iter{iteration}/refinements.exec.parquet",
    output:
        "results/{domain}/iter{iteration}/pool.parquet",
    log:
        "results/logs/{domain}/iter{iteration}/pool.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/pool.py"


rule select:
    input:
        "results/{domain}/iter{iteration}/pool.parquet",
    output:
        u1="results/{domain}/iter{iteration}/u1.parquet",
        u2="results/{domain}/iter{iteration}/u2.parquet",
    log:
        "results/logs/{domain}/iter{iteration}/select.log",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=lambda wildcards: settings(wildcards, "selection"),
    script:
        "../scripts/select.py"
