# Synthetic-mixture self-improvement: the policy's own trajectories filtered without labels
# (in-domain), novel tasks with hypothetical trajectories it writes (out-of-domain), and LoRA
# fine-tuning on mixture A, B or C (src/envisions_flow/methods/mixture.py).


rule mixture_indomain:
    input:
        policy=previous_agent_policy,
        tasks=lambda wildcards: agent_train_tasks(wildcards),
    output:
        trajectories="results/{agent_run}/iter{iteration}/indomain.parquet",
        summary="results/{agent_run}/iter{iteration}/indomain.json",
    log:
        "results/logs/{agent_run}/iter{iteration}/indomain.log",
    wildcard_constraints:
        agent_run=MIXTURE_RUNS,
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("mixture_indomain"),
    script:
        "../scripts/mixture_indomain.py"


rule mixture_synthetic:
    input:
        policy=previous_agent_policy,
        indomain="results/{agent_run}/iter{iteration}/indomain.parquet",
    output:
        trajectories="results/{agent_run}/iter{iteration}/synthetic.parquet",
        summary="results/{agent_run}/iter{iteration}/synthetic.json",
    log:
        "results/logs/{agent_run}/iter{iteration}/synthetic.log",
    wildcard_constraints:
        agent_run=MIXTURE_RUNS,
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("mixture_synthetic"),
    script:
        "../scripts/mixture_synthetic.py"


rule mixture_train:
    input:
        unpack(mixture_train_inputs),
    output:
        directory("results/{agent_run}/iter{iteration}/checkpoint"),
    log:
        "results/logs/{agent_run}/iter{iteration}/train.log",
    wildcard_constraints:
        agent_run=MIXTURE_RUNS,
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=stage_params("mixture_train"),
    script:
        "../scripts/mixture_train.py"
