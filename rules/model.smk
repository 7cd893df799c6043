rule convert_base_model:
    output:
        directory("results/models/base"),
    params:
        model=config["model"],
    log:
        "results/logs/convert_base_model.log",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    script:
        "../scripts/convert_base_model.py"
