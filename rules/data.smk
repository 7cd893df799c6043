rule prepare_data:
    output:
        "results/{domain}/data/{dataset}.parquet",
    log:
        "results/logs/{domain}/prepare_data.{dataset}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        spec=lambda wildcards: dataset_spec(config, wildcards.domain, wildcards.dataset),
    script:
        "../scripts/prepare_data.py"
