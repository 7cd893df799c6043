# The checkpoints a run keeps (its last iteration's, and those listed in keep_checkpoints) come from
# `train`; every other one from `train_transient`, the same rule with a temp() output, which Snakemake
# removes once the jobs that read it (the next iteration's sampling and training, this iteration's
# evaluation and margins) have run. A removed checkpoint is made again only if one of them must re-run.
rule train:
    input:
        init=init_model,
        u1="results/{run}/iter{iteration}/u1.parquet",
        u2="results/{run}/iter{iteration}/u2.parquet",
    output:
        directory("results/{run}/iter{iteration}/checkpoint"),
    log:
        "results/logs/{run}/iter{iteration}/train.log",
    wildcard_constraints:
        run=checkpoint_runs(kept=True),
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=stage_params("train"),
    script:
        "../scripts/train.py"


use rule train as train_transient with:
    output:
        temp(directory("results/{run}/iter{iteration}/checkpoint")),
    wildcard_constraints:
        run=checkpoint_runs(kept=False),


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
        settings=stage_params("warmup"),
    script:
        "../scripts/warmup.py"
