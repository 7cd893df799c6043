rule train:
    input:
        init=init_model,
        u1="results/{run}/iter{iteration}/u1.parquet",
        u2="results/{run}/iter{iteration}/u2.parquet",
    output:
        directory("results/{run}/iter{iteration}/checkpoint"),
    log:
        "results/logs/{run}/iter{iteration}/train.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=lambda wildcards: settings(wildcards, "training", "dpo"),
        strategy=lambda wildcards: strategy(wildcards.run, "sft", "l2", "dpo", "init"),
    script:
        "../scripts/train.py"


rule warmup:
    input:
        BASE_MODEL,
    output:
        directory("results/{run}/warmup/checkpoint"),
    log:
        "results/logs/{run}/warmup.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=lambda wildcards: settings(wildcards, "training", "self_rewarding"),
    script:
        "../scripts/warmup.py"
