"""One train job as several processes: topology, command lines, and real two-process CPU training via torchrun."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from envisions_flow.training.launch import LaunchError, Topology, command, launch, topology

TESTS = Path(__file__).parent


def test_one_process_unless_settings_or_allocation_ask_for_more():
    assert topology({}, env={}, gpus=0) == Topology(1, 1)
    assert topology({}, env={}, gpus=4) == Topology(1, 4)
    assert topology({}, env={"SLURM_JOB_NUM_NODES": "3"}, gpus=2) == Topology(3, 2)
    assert topology({}, env={"SLURM_NNODES": "2"}, gpus=0) == Topology(2, 1)
    assert topology({"nodes": 1, "processes_per_node": 2}, env={"SLURM_JOB_NUM_NODES": "4"}, gpus=8) == Topology(1, 2)
    assert Topology(3, 4).world_size == 12


def test_one_node_uses_torchrun_standalone(tmp_path):
    argv = command(Topology(1, 4), tmp_path / "spec.pickle", env={})
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in argv and "--nnodes=1" in argv and "--standalone" in argv
    assert argv[-3:] == ["-m", "envisions_flow.training.launch", str(tmp_path / "spec.pickle")]
    assert "srun" not in argv


def test_several_nodes_use_srun_and_the_first_host_as_rendezvous(tmp_path):
    env = {"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
    expanded = []

    def hosts(nodelist):
        expanded.append(nodelist)
        return ["gpu07", "gpu08"]

    argv = command(Topology(2, 4), tmp_path / "spec.pickle", env=env, port=29511, hosts=hosts, gpus_per_node=4)
    assert expanded == ["gpu[07-08]"]
    assert argv[:argv.index(sys.executable)] == ["srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                                                  "--mem=0", "--kill-on-bad-exit=1", "--gpus-per-node=4"]
    assert "--rdzv-endpoint=gpu07:29511" in argv and "--rdzv-backend=c10d" in argv and "--rdzv-id=4242" in argv
    assert "--nnodes=2" in argv and "--nproc-per-node=4" in argv and "--standalone" not in argv


def test_the_nested_srun_keeps_the_allocation_not_the_job_steps_one_task(tmp_path):
    """Inside the rule's job step SLURM_NTASKS=1 and the step's GPUs would make srun start one torchrun on one node."""
    from envisions_flow.training.launch import nested_srun_env

    step = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_NUM_NODES": "2",
            "SLURM_NTASKS": "1", "SLURM_NPROCS": "1", "SLURM_NNODES": "1", "SLURM_STEP_GPUS": "0,1,2,3",
            "SLURM_GPUS": "4", "SLURM_CPUS_PER_TASK": "32", "SRUN_CPUS_PER_TASK": "32", "SBATCH_GPUS": "8",
            "PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    kept = nested_srun_env(step)
    assert kept == {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_NUM_NODES": "2",
                    "PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    argv = command(Topology(2, 4), tmp_path / "spec.pickle", env=step, hosts=lambda _: ["gpu07", "gpu08"],
                   gpus_per_node=4)
    assert "--cpus-per-task=32" in argv and "--ntasks=2" in argv


def test_several_nodes_need_an_allocation_that_has_them(tmp_path):
    with pytest.raises(LaunchError, match="training.nodes.*SLURM_JOB_NODELIST"):
        command(Topology(2, 1), tmp_path / "spec.pickle", env={})
    with pytest.raises(LaunchError, match="3 nodes wanted, the allocation has 2"):
        command(Topology(3, 1), tmp_path / "spec.pickle", env={"SLURM_JOB_NODELIST": "n[1-2]"},
                hosts=lambda _: ["n1", "n2"])


def test_one_process_or_inside_a_launch_the_caller_does_the_work(tmp_path):
    assert launch("os:makedirs", [str(tmp_path / "made")], {}, tmp_path, env={}) is False
    inside = {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "RANK": "1"}
    assert launch("os:makedirs", [str(tmp_path / "made")], {"processes_per_node": 2}, tmp_path, env=inside) is False
    assert not (tmp_path / "made").exists() and not list(tmp_path.iterdir())


def test_two_processes_run_the_call_in_each(tmp_path):
    """Two real torchrun ranks; each makes a directory named after its rank (RANK comes from torchrun)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    made = tmp_path / "made"
    assert launch("launch_helpers:make_rank_dir", [str(made)], {"processes_per_node": 2}, tmp_path,
                  env={**env, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])})
    assert sorted(path.name for path in made.iterdir()) == ["rank0", "rank1"]
    assert not list(tmp_path.glob(".launch-*"))


def test_a_failing_rank_fails_the_launch_and_leaves_no_spec(tmp_path):
    """Two real torchrun ranks run a call that raises; the launch reports it and cleans up its spec file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with pytest.raises(LaunchError, match="2 training processes failed"):
        launch("os:remove", [str(tmp_path / "missing")], {"processes_per_node": 2}, tmp_path, env=env)
    assert not list(tmp_path.glob(".launch-*"))


# Real training of the embedded model in two CPU processes (gloo) through the launcher.

SETTINGS = {"epochs": 1, "learning_rate": 1e-4, "lr_scheduler": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0,
            "effective_batch_size": 4, "per_device_batch_size": 2, "max_length": 256, "seed": 0,
            "processes_per_node": 2}
QUESTIONS = ["Ava has 3 apples and gets 4 more. How many?", "A box holds 6 eggs. How many eggs are in 5 boxes?"]
PROGRAMS = ["def solution():\n    return 3 + 4", "def solution():\n    return 6 * 5"]
U1 = pd.DataFrame({"id": ["a", "b"], "question": QUESTIONS, "rank": [1, 1], "positive": PROGRAMS,
                   "self_reward": [-0.3, -0.4]})
U2 = pd.DataFrame({"id": ["a", "b"], "question": QUESTIONS, "rank": [1, 1], "positive": PROGRAMS,
                   "negative": ["def solution():\n    return 3 - 4", "def solution():\n    return 6 + 5"],
                   "positive_reward": [-0.3, -0.4], "negative_reward": [-0.2, -0.1]})
CHECKPOINT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                    "tokenizer_config.json", "chat_template.jinja", "training_args.bin", "training.json"}


def _examples(base_model):
    from transformers import AutoTokenizer

    from envisions_flow.environments.math import MathEnvironment
    from envisions_flow.training.examples import build_examples

    return build_examples(U1, U2, MathEnvironment(), AutoTokenizer.from_pretrained(base_model))


def _completion_loss_and_weights(model_dir, example):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    target = tokenizer(example["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        loss = model(torch.tensor([prompt + target]), labels=torch.tensor([[-100] * len(prompt) + target])).loss.item()
    return loss, model.state_dict()


def _check_checkpoint(base_model, out, examples):
    """Rank 0 renamed `.partial` into place once (a second rank doing it too would have failed the launch)."""
    assert {path.name for path in out.iterdir()} == CHECKPOINT_FILES
    assert not out.with_name(out.name + ".partial").exists() and not list(out.parent.glob(".launch-*"))
    metrics = json.loads((out / "training.json").read_text())
    # 4 examples, 4 per optimizer step: 1 step, as one process with 2 accumulation steps takes (two ranks that
    # each took the whole data set, or half the batch, would take 2)
    assert metrics["processes"] == 2 and metrics["train_examples"] == 4 and metrics["sft"]["global_step"] == 1
    base_loss, base_weights = _completion_loss_and_weights(base_model, examples[0])
    loss, weights = _completion_loss_and_weights(out, examples[0])
    assert weights.keys() == base_weights.keys()
    assert all(weights[name].shape == base_weights[name].shape for name in weights)
    assert max(float((weights[name] - base_weights[name]).abs().max()) for name in weights) > 1e-5
    assert loss < base_loss - 0.1
    return metrics


def _config(training: dict) -> dict:
    """The demo configuration as the workflow sees it (schema defaults filled in), with these training settings."""
    import yaml
    from snakemake.utils import validate

    from envisions_flow.workflow.runs import deep_merge

    config = deep_merge(*(yaml.safe_load((TESTS.parent / "config" / name).read_text())
                          for name in ("config.yaml", "demo.yaml")))
    validate(config, str(TESTS.parent / "config" / "schema.yaml"))
    config["domains"]["math"]["training"].update(training)
    return config


def test_the_train_stage_hands_itself_to_the_launcher(monkeypatch, tmp_path):
    from envisions_flow.stages.train import train
    from envisions_flow.training import launch as launcher

    calls = []
    monkeypatch.setattr(launcher, "launch", lambda *args: calls.append(args) or True)
    config = _config({"processes_per_node": 2})
    out = str(tmp_path / "math" / "iter1" / "checkpoint")
    train(config, "math", 1, "base", "u1.parquet", "u2.parquet", out)  # returns before reading anything
    assert calls == [("envisions_flow.stages.train:train", [config, "math", 1, "base", "u1.parquet", "u2.parquet", out],
                      config["domains"]["math"]["training"], Path(out).parent)]


@pytest.mark.slow
def test_two_cpu_processes_train_and_rank_0_writes_the_checkpoint(base_model, tmp_path, monkeypatch):
    """The train stage as the rule runs it, asked for two processes: torchrun, gloo, one checkpoint."""
    from envisions_flow.stages.train import train
    from envisions_flow.workflow import artifacts as art

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = _config({key: value for key, value in SETTINGS.items() if key != "seed"})
    art.write_table(U1, tmp_path / "u1.parquet", art.U1)
    art.write_table(U2, tmp_path / "u2.parquet", art.U2)
    out = tmp_path / "math" / "iter1" / "checkpoint"
    train(config, "math", 1, str(base_model), str(tmp_path / "u1.parquet"), str(tmp_path / "u2.parquet"),
                 str(out))
    _check_checkpoint(base_model, out, _examples(base_model))


@pytest.mark.slow
def test_deepspeed_zero3_on_cpu_through_the_launcher(base_model, tmp_path):
    """ZeRO-3 with config/deepspeed/zero3.json over two CPU ranks (DeepSpeed's CPU accelerator, gloo).

    Each rank holds half the weights while training; the saved checkpoint has them all, gathered.
    accelerate needs a small shim on CPU (tests/launch_helpers.py says why); on GPUs it does not.
    """
    pytest.importorskip("deepspeed")
    examples = _examples(base_model)
    out = tmp_path / "iter1" / "checkpoint"
    records = tmp_path / "records"
    records.mkdir()
    settings = {**SETTINGS, "deepspeed_config": str(TESTS.parent / "config" / "deepspeed" / "zero3.json")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "ZERO3_RECORD_DIR": str(records),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    launch("launch_helpers:train", [str(base_model), examples, settings, str(out)], settings, out.parent, env=env)
    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    full = ranks[0]["full_numel"]
    assert full > 100_000_000  # SmolLM2-135M (tied embeddings counted once)
    for record in ranks:
        assert record["zero_stage"] == 3 and record["world_size"] == 2 and record["full_numel"] == full
        assert 0.45 * full < record["local_numel"] < 0.55 * full
    _check_checkpoint(base_model, out, examples)


@pytest.mark.slow
def test_lora_under_zero3_on_cpu_merges_the_gathered_adapter(base_model, tmp_path):
    """A mixture run's LoRA training with ZeRO-3 over two CPU ranks: each rank holds half the weights, and the
    checkpoint is the base with the trained adapter merged (merge_and_unload cannot run on partitioned weights)."""
    pytest.importorskip("deepspeed")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from my_environments.counter import CounterEnvironment
    from test_mixture import step_conversation, trajectory

    from envisions_flow.training.examples import trajectory_example

    environment, tokenizer = CounterEnvironment(), AutoTokenizer.from_pretrained(base_model)
    episode = trajectory("x", ("up", "inc", ""), ("there", "submit", ""))  # as test_mixture's LoRA test
    examples = [trajectory_example(tokenizer, *step_conversation(environment, episode, index)) for index in (0, 1)]
    out = tmp_path / "iter1" / "checkpoint"
    records = tmp_path / "records"
    records.mkdir()
    settings = {**SETTINGS, "learning_rate": 1e-3, "lr_scheduler": "constant", "max_length": 1024,
                "deepspeed_config": str(TESTS.parent / "config" / "deepspeed" / "zero3.json")}
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "ZERO3_RECORD_DIR": str(records),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    launch("launch_helpers:train_trajectories", [str(base_model), examples, settings, str(out), lora], settings,
           out.parent, env=env)
    for rank in (0, 1):
        record = json.loads((records / f"rank{rank}.json").read_text())
        assert record["zero_stage"] == 3 and 0.45 * record["full_numel"] < record["local_numel"] < 0.55 * record["full_numel"]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    expected = PeftModel.from_pretrained(base, str(records / "adapter")).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.allclose(merged[name], expected[name], atol=1e-6) for name in merged)
    original = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).state_dict()
    changed = {name for name in original if not torch.equal(merged[name], original[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)
