# Shared by the agent runs (IPR, synthetic mixtures): where their expert and reference trajectories
# come from, step-mode evaluation and the run's summary. Their own stages: rules/ipr.smk, mixture.smk.


rule agent_source:
    input:
        unpack(lambda wildcards: agent_source_inputs(wildcards.kind)(wildcards)),
    output:
        "results/{agent_run}/{kind}.parquet",
    log:
        "results/logs/{agent_run}/{kind}.log",
    wildcard_constraints:
        kind="experts|references",
    conda:
        "../envs/model.yaml"
    params:
        settings=stage_params("agent_source"),
    script:
        "../scripts/agent_source.py"


rule agent_evaluate:
    input:
        unpack(agent_eval_inputs),
    output:
        json="results/{agent_run}/iter{iteration}/eval.json",
        parquet="results/{agent_run}/iter{iteration}/eval.parquet",
    log:
        "results/logs/{agent_run}/iter{iteration}/evaluate.log",
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("agent_evaluate"),
        testsets=lambda wildcards: testset_names(parse_run_dir(wildcards.agent_run)[0]),
    script:
        "../scripts/agent_evaluate.py"


rule agent_summary:
    input:
        agent_results,
    output:
        "results/{agent_run}/summary.md",
    log:
        "results/logs/{agent_run}/summary.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/agent_summary.py"
