rule explore:
    input:
        tasks=lambda wildcards: f"results/{parse_run_dir(wildcards.run)[0]}/data/train.parquet",
        model=policy_for_sampling,
    output:
        "results/{run}/iter{iteration}/samples.parquet",
    log:
        "results/logs/{run}/iter{iteration}/explore.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=explore_params,
        generation=config["generation"],
    script:
        "../scripts/explore.py"
