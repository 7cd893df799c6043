rule explore:
    input:
        tasks="results/{domain}/data/train.parquet",
        model=policy_for_sampling,
    output:
        "results/{domain}/iter{iteration}/samples.parquet",
    log:
        "results/logs/{domain}/iter{iteration}/explore.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=lambda wildcards: settings(wildcards, "explore"),
        generation=config["generation"],
    script:
        "../scripts/explore.py"
