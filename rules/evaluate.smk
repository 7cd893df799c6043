rule evaluate:
    input:
        model=policy_for_eval,
        testsets=testset_files,
    output:
        json="results/{domain}/iter{iteration}/eval.json",
        parquet="results/{domain}/iter{iteration}/eval.parquet",
    log:
        "results/logs/{domain}/iter{iteration}/evaluate.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=lambda wildcards: settings(wildcards, "eval", "execution"),
        testsets=lambda wildcards: testset_names(wildcards.domain),
        generation=config["generation"],
    script:
        "../scripts/evaluate.py"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        "results/{domain}/summary.md",
    log:
        "results/logs/{domain}/summary.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/summary.py"
