rule explore:
    input:
        tasks=train_data,
        model=policy_for_sampling,
    output:
        "results/{run}/iter{iteration}/samples.parquet",
    log:
        "results/logs/{run}/iter{iteration}/explore.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("explore"),
    script:
        "../scripts/explore.py"
