"""The memory plan: a 7B on 8×80 GB by hand, the start-up check, the tensor-parallel choice, the Slurm profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from envisions_flow.training.setup import resolve, zero3_config
from envisions_flow.workflow.config import ConfigError
from envisions_flow.workflow.memory_model import (
    CUDA_RUNTIME,
    GIB,
    ModelShape,
    TrainingSetup,
    tensor_parallel_size,
    training_estimate,
)
from envisions_flow.workflow.memory_plan import Resources, check, plan, profile_resources, rule_resources

ROOT = Path(__file__).parents[1]
# meta-llama/Llama-2-7b-chat-hf's config.json (the keys the plan reads)
LLAMA2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 4096,
             "tie_word_embeddings": False}
QWEN2_7B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "intermediate_size": 18944, "vocab_size": 152064, "max_position_embeddings": 32768, "model_type": "qwen2"}
PAPER_TRAINING = {"per_device_batch_size": 4, "max_length": 2048}
H100 = 80 * GIB


def test_llama2_7b_has_the_parameters_of_its_checkpoint():
    h, layers, inner, vocab = 4096, 32, 11008, 32000
    by_hand = layers * (4 * h * h + 3 * h * inner + 2 * h) + 2 * vocab * h + h
    assert ModelShape.from_config(LLAMA2_7B).parameters == by_hand == 6_738_415_616


def test_a_7b_on_8_gpus_of_80_gb_trains_with_zero3_and_checkpointing_by_default():
    shape = ModelShape.from_config(LLAMA2_7B)
    P, h, tokens = shape.parameters, 4096, 4 * 2048
    setup, estimate = resolve(shape, PAPER_TRAINING, world=8, on_gpu=True, gpu_memory=H100)
    assert (setup.precision, setup.zero_stage, setup.checkpointing) == ("bf16", 3, True)
    layer = 4 * h * h + 3 * h * 11008 + 2 * h
    by_hand = (16 * P // 8  # bf16 weights and gradients, fp32 master and two AdamW moments, over 8 ranks
               + 2 * layer * 2  # the layer ZeRO-3 computes and the one it prefetches, gathered in bf16
               + tokens * 32 * h * 2  # checkpointed layer inputs
               + tokens * (13 * h + 2 * h + 4 * 11008) * 2  # one layer recomputed in the backward pass
               + tokens * 32000 * (2 + 12)  # logits, their fp32 copy, log-softmax and gradient
               + CUDA_RUNTIME)
    assert abs(estimate.device - by_hand) <= 16  # integer division of the partitions
    assert estimate.device < 0.8 * H100
    # without ZeRO the fp32 master weights, gradients, AdamW and DDP's buckets alone pass 80 GB
    plain = training_estimate(shape, TrainingSetup(), 8, 1, 4, 2048)
    assert plain.parts["weights"] + plain.parts["gradients"] + plain.parts["AdamW"] + plain.parts["DDP buckets"] > H100


def test_zero3_without_checkpointing_does_not_fit_the_paper_batch():
    shape = ModelShape.from_config(LLAMA2_7B)
    zero3 = str(ROOT / "config" / "deepspeed" / "zero3.json")
    setup, estimate = resolve(shape, {**PAPER_TRAINING, "gradient_checkpointing": False, "deepspeed_config": zero3},
                              world=8, on_gpu=True, gpu_memory=H100)
    assert (setup.zero_stage, setup.checkpointing) == (3, False)
    assert estimate.parts["activations"] > 50 * GIB and not estimate.fits(H100, None)


def test_on_a_cpu_nothing_is_switched_on():
    setup, _ = resolve(ModelShape.from_config(LLAMA2_7B), PAPER_TRAINING, world=1, on_gpu=False, gpu_memory=None)
    assert (setup.precision, setup.zero_stage, setup.checkpointing) == ("fp32", 0, False)


def test_one_gpu_offloads_the_optimizer_as_a_last_resort():
    setup, estimate = resolve(ModelShape.from_config(LLAMA2_7B), PAPER_TRAINING, world=1, on_gpu=True,
                              gpu_memory=H100)
    assert (setup.zero_stage, setup.offload_optimizer, setup.checkpointing) == (3, True, True)
    assert estimate.fits(H100, None) and estimate.host > 12 * ModelShape.from_config(LLAMA2_7B).parameters


def test_the_deepspeed_file_is_what_auto_uses():
    import json

    assert json.loads((ROOT / "config" / "deepspeed" / "zero3.json").read_text()) == zero3_config()


@pytest.mark.parametrize("architecture, gpus, chosen", [(LLAMA2_7B, 8, 8), (QWEN2_7B, 8, 4), (QWEN2_7B, 2, 2),
                                                         ({**LLAMA2_7B, "num_attention_heads": 9,
                                                           "num_key_value_heads": 3}, 2, 1),
                                                         ({**LLAMA2_7B, "num_attention_heads": 9,
                                                           "num_key_value_heads": 3}, 4, 3)])
def test_tensor_parallelism_is_the_largest_divisor_of_the_heads_the_gpus_allow(architecture, gpus, chosen):
    assert tensor_parallel_size(ModelShape.from_config(architecture), gpus) == chosen


def test_a_tensor_parallel_size_that_does_not_divide_the_heads_is_refused_by_name():
    shape = ModelShape.from_config(QWEN2_7B)
    with pytest.raises(ValueError, match=r"generation.tensor_parallel_size: 8 does not divide .* 28 attention heads "
                                         r"\(4 KV heads\); it may be one of \[1, 2, 4, 28\]"):
        tensor_parallel_size(shape, 8, 8)
    with pytest.raises(ValueError, match="4 GPUs wanted, the job sees 2"):
        tensor_parallel_size(shape, 2, 4)


def _paper_config(**training) -> dict:
    """config/paper.yaml as the workflow sees it (schema defaults filled in), with these training keys."""
    from snakemake.utils import validate

    from envisions_flow.workflow.gpu_hours import load_config

    config = load_config([ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml"])
    for domain in config["domains"].values():
        domain["training"].update(training)
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


def _slurm(monkeypatch, gpus: int = 8, **env: str) -> None:
    monkeypatch.setenv("ENVISIONS_SLURM_GPUS", str(gpus))
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_the_paper_config_fits_8_gpus_of_80_gb_with_the_defaults(monkeypatch, tmp_path):
    _slurm(monkeypatch)
    config = _paper_config()
    resources = profile_resources(ROOT / "profiles" / "slurm", config)
    check(config, resources, tmp_path)  # no exception: every rule fits
    rows = plan(config, resources, ModelShape.from_config(LLAMA2_7B))
    assert {row.rule for row in rows} >= {"explore", "refine", "evaluate", "train", "margins", "judge",
                                          "agent_evaluate", "ipr_sft", "ipr_explore", "ipr_train", "mixture_indomain",
                                          "mixture_synthetic", "mixture_train"}
    assert all(row.fits for row in rows)
    train = [row for row in rows if row.rule == "train"]
    assert all("ZeRO-3" in row.estimate.setting and "checkpointing" in row.estimate.setting for row in train)
    assert all("TP 8" in row.estimate.setting for row in rows if row.rule == "explore")


def test_with_zero_and_checkpointing_off_the_check_names_train(monkeypatch, tmp_path):
    _slurm(monkeypatch)
    config = _paper_config(deepspeed_config=None, gradient_checkpointing=False)
    with pytest.raises(ConfigError, match=r"rule train \(\w+, run \w+\) cannot fit: .* GiB per GPU with bf16 mixed, "
                                          r"over 80% of 80 GiB; change training.deepspeed_config and "
                                          r"training.gradient_checkpointing to auto"):
        check(config, profile_resources(ROOT / "profiles" / "slurm", config), tmp_path)


def test_a_cpu_run_is_never_stopped(monkeypatch, tmp_path):
    """The local profile (no GPUs, no GPU memory): nothing to check, however large the model."""
    config = _paper_config(deepspeed_config=None, gradient_checkpointing=False)
    check(config, {rule: Resources() for rule in ("train", "explore")}, tmp_path)
    _slurm(monkeypatch, gpus=0)
    check(config, profile_resources(ROOT / "profiles" / "slurm", config), tmp_path)


def test_a_configured_gpu_budget_is_checked_without_a_profile(tmp_path):
    config = _paper_config(deepspeed_config=None, gradient_checkpointing=False)
    config["memory_plan"].update(gpus=1, gpu_memory_gb=24)
    with pytest.raises(ConfigError, match="rule train"):
        check(config, {"train": rule_resources({}, config)}, tmp_path)


def test_an_architecture_that_disagrees_with_the_models_config_is_refused(tmp_path):
    import json

    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({**LLAMA2_7B, "num_hidden_layers": 40}))
    config = _paper_config()
    config["memory_plan"]["gpu_memory_gb"] = 80
    with pytest.raises(ConfigError, match="memory_plan.architecture disagrees with .*config.json"):
        check(config, {"train": Resources(gpus=8, gpu_memory=H100)}, tmp_path)


def _rendered(monkeypatch, **env: str) -> dict:
    import yte

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return yte.process_yaml((ROOT / "profiles" / "slurm" / "config.yaml").read_text())


GPU_RULES = ("explore", "refine", "evaluate", "judge", "margins", "train", "train_transient", "warmup", "agent_evaluate",
             "ipr_explore", "mixture_indomain", "mixture_synthetic", "ipr_sft", "ipr_train", "mixture_train")


def test_train_and_its_twin_for_removed_checkpoints_get_the_same_resources(monkeypatch, tmp_path):
    profile = _rendered(monkeypatch, ENVISIONS_SLURM_GPUS="8", ENVISIONS_SLURM_TRAIN_NODES="2")
    assert profile["set-resources"]["train_transient"] == profile["set-resources"]["train"]
    assert profile["set-threads"]["train_transient"] == profile["set-threads"]["train"]
    config = {"domains": {}}
    with pytest.raises(ConfigError, match="rule train_transient .* give both the same resources"):
        check(config, {"train": Resources(gpus=8, gpu_memory=H100), "train_transient": Resources(gpus=1)}, tmp_path)


def test_every_gpu_job_of_the_rendered_profile_is_on_one_node(monkeypatch):
    profile = _rendered(monkeypatch, ENVISIONS_SLURM_GPUS="8", ENVISIONS_SLURM_GPU_VRAM_GB="80")
    for rule in GPU_RULES:
        job = profile["set-resources"][rule]
        assert (job["nodes"], job["gpu"], job["gpu_vram_mb"]) == (1, 8, 85899), rule
        assert job["mem_mb"] == 8 * 32000  # host memory per rank
        assert profile["set-threads"][rule] == 8


def test_training_over_two_nodes_asks_for_the_gpus_of_each(monkeypatch):
    profile = _rendered(monkeypatch, ENVISIONS_SLURM_GPUS="8", ENVISIONS_SLURM_TRAIN_NODES="2")
    train = profile["set-resources"]["train"]
    assert train["nodes"] == 2 and train["tasks"] == 2 and "gpu" not in train
    assert train["slurm_extra"] == "'--gpus-per-node=8'"
    assert rule_resources(train, {}) == Resources(gpus=8, nodes=2, gpu_memory=train["gpu_vram_mb"] * 1000**2,
                                                  host_memory=256000 * 1000**2)
    assert profile["set-resources"]["explore"]["nodes"] == 1


def test_gpu_rules_on_cpus_keep_their_old_resources(monkeypatch):
    profile = _rendered(monkeypatch, ENVISIONS_SLURM_GPUS="0", ENVISIONS_SLURM_GPU_MEM_MB="3000")
    train = profile["set-resources"]["train"]
    assert "gpu" not in train and "gpu_vram_mb" not in train and train["mem_mb"] == 3000


@pytest.mark.slow
def test_the_paper_config_dry_runs_through_the_slurm_profile_and_a_rule_that_cannot_fit_stops_it(tmp_path):
    """`snakemake --profile profiles/slurm -n` on config/paper.yaml without its data or model: every GPU job on one
    node with 8 GPUs; with ZeRO and checkpointing off, the start-up check stops the run before any job, naming train."""
    import os
    import re
    import subprocess

    from test_workflow import SNAKEMAKE, workflow_copy

    work = workflow_copy(tmp_path / "wf")
    env = {**os.environ, "ENVISIONS_SLURM_GPUS": "8", "ENVISIONS_SLURM_GPU_VRAM_GB": "80"}
    command = [*SNAKEMAKE, "--profile", "profiles/slurm", "-n", "--configfile", "config/paper.yaml"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", done.stdout, re.MULTILINE)
    gpu_jobs = [(rule, resources) for rule, resources in jobs if rule in GPU_RULES]
    assert {rule for rule, _ in gpu_jobs} >= {"explore", "refine", "evaluate", "train", "margins", "judge",
                                              "agent_evaluate", "ipr_train", "mixture_train"}
    for rule, resources in gpu_jobs:
        assert "gpu=8" in resources and "nodes=1" in resources and "gpu_vram_mb=85899" in resources, rule
    (work / "misfit.yaml").write_text(yaml.safe_dump(
        {"domains": {"math": {"training": {"deepspeed_config": None, "gradient_checkpointing": False}}}}))
    done = subprocess.run([*command, "misfit.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode != 0
    assert re.search(r"memory plan: rule train \(math, run \w+\) cannot fit", done.stdout + done.stderr)


def test_sampling_by_hand_with_each_backend():
    from envisions_flow.workflow.memory_model import VLLM_RUNTIME, sampling_estimate, vllm_estimate

    shape = ModelShape.from_config(LLAMA2_7B)
    P, kv_per_token = shape.parameters, 2 * 32 * 32 * 128 * 2  # keys and values of 32 layers in bf16: 512 KiB
    # transformers backend, explore: 32 rows = 6 prompts x K=5 (30 rows), each prompt's cache once (a prompt as long
    # as the context leaves: 4096 - 2200), every sample's 2200 new tokens preallocated
    explore = sampling_estimate(shape, 32, 5, 2200, 2)
    assert explore.parts["weights"] == 2 * P
    assert explore.parts["KV cache"] == (6 * 1896 + 30 * 2200) * kv_per_token
    assert explore.device < 0.8 * H100
    # vLLM over 8 GPUs: an eighth of the weights and one 4096-token sequence's cache on each
    vllm = vllm_estimate(shape, 8, 0.9, 4096)
    assert vllm.device == 2 * P // 8 + 4096 * kv_per_token // 8 + VLLM_RUNTIME + CUDA_RUNTIME
    assert vllm.fits(H100, None) and vllm.budget == 0.9


def test_a_sampler_that_cannot_fit_is_told_the_batch_that_does(monkeypatch, tmp_path):
    """The transformers backend preallocates every row's new tokens: 32 rows of a 7B at the logic domain's 3,500 new
    tokens (and the refine pass's 4,096) do not fit 80 GB."""
    _slurm(monkeypatch)
    config = _paper_config()
    config["generation"] = {**config["generation"], "backend": "transformers", "batch_size": 32}
    with pytest.raises(ConfigError, match=r"rule \w+ \(\w+, run \w+\) cannot fit: .* with transformers, batch 32, "
                                          r".*; change generation.batch_size \(\d+ fits\)"):
        check(config, profile_resources(ROOT / "profiles" / "slurm", config), tmp_path)
