rule pool:
    input:
        unpack(pool_inputs),
    output:
        "results/{run}/iter{iteration}/pool.parquet",
    log:
        "results/logs/{run}/iter{iteration}/pool.log",
    conda:
        "../envs/cpu.yaml"
    params:
        strategy=lambda wildcards: strategy(wildcards.run),
    script:
        "../scripts/pool.py"


rule select:
    input:
        "results/{run}/iter{iteration}/pool.parquet",
    output:
        u1="results/{run}/iter{iteration}/u1.parquet",
        u2="results/{run}/iter{iteration}/u2.parquet",
    log:
        "results/logs/{run}/iter{iteration}/select.log",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=lambda wildcards: settings(wildcards, "selection"),
        strategy=lambda wildcards: strategy(wildcards.run),
    script:
        "../scripts/select.py"
