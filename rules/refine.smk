rule refine:
    input:
        samples="results/{domain}/iter{iteration}/samples.parquet",
        model=policy_for_sampling,
    output:
        "results/{domain}/iter{iteration}/refinements.parquet",
    log:
        "results/logs/{domain}/iter{iteration}/refine.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=lambda wildcards: settings(wildcards, "refine"),
        generation=config["generation"],
    script:
        "../scripts/refine.py"
