rule train:
    input:
        base=BASE_MODEL,
        u1="results/{domain}/iter{iteration}/u1.parquet",
        u2="results/{domain}/iter{iteration}/u2.parquet",
    output:
        directory("results/{domain}/iter{iteration}/checkpoint"),
    log:
        "results/logs/{domain}/iter{iteration}/train.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=lambda wildcards: settings(wildcards, "training"),
    script:
        "../scripts/train.py"
