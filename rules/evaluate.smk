rule evaluate:
    input:
        model=policy_for_eval,
        testsets=testset_files,
    output:
        json="results/{run}/iter{iteration}/eval.json",
        parquet="results/{run}/iter{iteration}/eval.parquet",
    log:
        "results/logs/{run}/iter{iteration}/evaluate.log",
    # before the next iteration's sampling, which it could wait behind: the checkpoint is then removed sooner
    priority: 1
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("evaluate"),
        testsets=lambda wildcards: testset_names(parse_run_dir(wildcards.run)[0]),
    script:
        "../scripts/evaluate.py"
