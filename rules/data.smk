rule prepare_data:
    output:
        "results/{domain}/data/{dataset}.parquet",
    log:
        "results/logs/{domain}/prepare_data.{dataset}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=lambda wildcards: data_params(
            config, wildcards.domain, wildcards.dataset
        ),
    script:
        "../scripts/prepare_data.py"
