# IPR: SFT on expert trajectories, then per iteration Monte Carlo step rewards along the experts'
# paths, contrastive step and outcome pairs, and o-DPO + s-DPO + SFT training (src/envisions_flow/methods/ipr.py).


rule ipr_sft:
    input:
        model=BASE_MODEL,
        experts="results/{agent_run}/experts.parquet",
    output:
        directory("results/{agent_run}/sft/checkpoint"),
    log:
        "results/logs/{agent_run}/sft.log",
    wildcard_constraints:
        agent_run=IPR_RUNS,
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=stage_params("ipr_sft"),
    script:
        "../scripts/ipr_sft.py"


rule ipr_explore:
    input:
        policy=previous_agent_policy,
        scorer="results/{agent_run}/sft/checkpoint",
        experts="results/{agent_run}/experts.parquet",
    output:
        steps="results/{agent_run}/iter{iteration}/step_rewards.parquet",
        pairs="results/{agent_run}/iter{iteration}/pairs.parquet",
    log:
        "results/logs/{agent_run}/iter{iteration}/explore.log",
    wildcard_constraints:
        agent_run=IPR_RUNS,
    conda:
        "../envs/model.yaml"
    threads: 2
    params:
        settings=stage_params("ipr_explore"),
    script:
        "../scripts/ipr_explore.py"


rule ipr_train:
    input:
        policy=previous_agent_policy,
        reference="results/{agent_run}/sft/checkpoint",
        pairs="results/{agent_run}/iter{iteration}/pairs.parquet",
    output:
        directory("results/{agent_run}/iter{iteration}/checkpoint"),
    log:
        "results/logs/{agent_run}/iter{iteration}/train.log",
    wildcard_constraints:
        agent_run=IPR_RUNS,
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=stage_params("ipr_train"),
    script:
        "../scripts/ipr_train.py"
