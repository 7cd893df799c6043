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
        settings=stage_params("pool"),
    script:
        "../scripts/pool.py"


rule select:
    input:
        unpack(select_inputs),
    output:
        u1="results/{run}/iter{iteration}/u1.parquet",
        u2="results/{run}/iter{iteration}/u2.parquet",
    log:
        "results/logs/{run}/iter{iteration}/select.log",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=stage_params("select"),
    script:
        "../scripts/select.py"


rule judge:
    input:
        samples=explored,
        model=policy_for_sampling,
    output:
        "results/{run}/iter{iteration}/judgments.parquet",
    log:
        "results/logs/{run}/iter{iteration}/judge.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("judge"),
    script:
        "../scripts/judge.py"
