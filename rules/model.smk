rule convert_base_model:
    output:
        directory("results/models/base"),
    log:
        "results/logs/convert_base_model.log",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    params:
        settings=model_params(config),
    script:
        "../scripts/convert_base_model.py"
