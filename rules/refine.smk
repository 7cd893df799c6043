rule refine:
    input:
        samples=explored,
        model=policy_for_sampling,
    output:
        "results/{run}/iter{iteration}/refinements.parquet",
    log:
        "results/logs/{run}/iter{iteration}/refine.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("refine"),
    script:
        "../scripts/refine.py"
