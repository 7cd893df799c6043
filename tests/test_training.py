"""Training on L1 + L2: prompt tokens are masked, the completion (with EOS) is learned; DPO for the baselines."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.generation.base import render_chat
from envisions_flow.generation.transformers_backend import sequence_logprob
from envisions_flow.training.examples import build_examples, build_pairs
from envisions_flow.training.trainers import make_dpo_trainer, make_trainer, train

pytestmark = pytest.mark.slow

SETTINGS = {"epochs": 1, "learning_rate": 1e-4, "lr_scheduler": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0,
            "effective_batch_size": 2, "per_device_batch_size": 2, "max_length": 512, "seed": 0}
U1 = pd.DataFrame({"id": ["a"], "question": ["Ava has 3 apples and gets 4 more. How many?"], "rank": [1],
                   "positive": ["def solution():\n    return 3 + 4"], "self_reward": [-0.3]})
U2 = pd.DataFrame({"id": ["a"], "question": ["Ava has 3 apples and gets 4 more. How many?"], "rank": [1],
                   "positive": ["def solution():\n    return 3 + 4"], "negative": ["def solution():\n    return 3 - 4"],
                   "positive_reward": [-0.3], "negative_reward": [-0.2]})


def test_examples_use_the_sampling_prompts(base_model):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    examples = build_examples(U1, U2, MathEnvironment(), tokenizer)
    assert [e["loss"] for e in examples] == ["L1", "L2"]
    assert "Question: Ava has 3 apples" in examples[0]["prompt"]
    assert "return 3 - 4" in examples[1]["prompt"] and "return 3 - 4" not in examples[1]["completion"]
    assert examples[0]["completion"] == "```python\ndef solution():\n    return 3 + 4\n```"


def test_prompt_tokens_are_masked(base_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    examples = build_examples(U1, U2, MathEnvironment(), tokenizer)
    trainer = make_trainer(base_model, examples, SETTINGS, tmp_path)
    for example, row in zip(examples, trainer.train_dataset):
        prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(example["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == prompt_ids + completion_ids
        batch = trainer.data_collator([row])
        labels = batch["labels"][0].tolist()
        assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
        assert labels[len(prompt_ids):] == completion_ids
        assert completion_ids[-1] == tokenizer.eos_token_id


def test_training_from_base_lowers_the_loss_of_the_positive(base_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    examples = build_examples(U1, U2, MathEnvironment(), tokenizer)

    def completion_loss(model_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        prompt = tokenizer(examples[0]["prompt"], add_special_tokens=False)["input_ids"]
        target = tokenizer(examples[0]["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        with torch.no_grad():
            return model(ids, labels=labels).loss.item()

    metrics = train(base_model, examples * 4, {**SETTINGS, "epochs": 2}, tmp_path / "checkpoint")
    assert metrics["train_examples"] == 8 and metrics["l1_examples"] == 4 and metrics["l2_examples"] == 4
    assert (tmp_path / "checkpoint" / "training.json").is_file()
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint.partial").exists()
    assert completion_loss(tmp_path / "checkpoint") < completion_loss(base_model) - 0.1


def test_no_examples_copies_the_base_model(base_model, tmp_path):
    metrics = train(base_model, [], SETTINGS, tmp_path / "checkpoint")
    assert metrics["train_examples"] == 0
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


DPO = {"learning_rate": 2e-5, "warmup_ratio": 0.0, "beta": 0.1, "epochs": 3}


def _margin(model_dir, pair) -> float:
    """log p(chosen | prompt) - log p(rejected | prompt), summed over tokens, as DPO's implicit reward sees it."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)

    def logprob(text):
        return sequence_logprob(model, tokenizer, pair["prompt"], tokenizer(text + tokenizer.eos_token,
                                                                              add_special_tokens=False)["input_ids"])
    return logprob(pair["chosen"]) - logprob(pair["rejected"])


def test_dpo_starts_at_log_2_and_widens_the_margin(base_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    pairs = build_pairs(U2, MathEnvironment(), tokenizer)
    assert "return 3 + 4" in pairs[0]["chosen"] and "return 3 - 4" in pairs[0]["rejected"]
    zero_shot = MathEnvironment().explore_prompt(Task("a", U2["question"][0], ""), few_shot=False)
    assert pairs[0]["prompt"] == render_chat(tokenizer, zero_shot)
    trainer = make_dpo_trainer(base_model, pairs * 4, SETTINGS, DPO, tmp_path / "trainer")
    trainer.train()
    first = trainer.state.log_history[0]
    # the policy starts as the reference (the model passed in): every pair's DPO loss is -log sigmoid(0) = log 2
    assert abs(first["loss"] - 0.693147) < 1e-3
    trainer.save_model(str(tmp_path / "dpo"))
    assert _margin(tmp_path / "dpo", pairs[0]) > _margin(base_model, pairs[0]) + 0.5


def test_sft_then_dpo_uses_the_sft_model_as_reference(base_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    examples = build_examples(U1, U2.iloc[0:0], MathEnvironment(), tokenizer)
    pairs = build_pairs(U2, MathEnvironment(), tokenizer)
    metrics = train(base_model, examples * 2, SETTINGS, tmp_path / "checkpoint", pairs * 2, DPO)
    assert metrics["l1_examples"] == 2 and metrics["l2_examples"] == 0 and metrics["dpo_pairs"] == 2
    assert "sft" in metrics and "dpo" in metrics
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint" / "sft").exists() and not (tmp_path / "checkpoint.partial").exists()


@pytest.mark.parametrize("report_to", ["none", "tensorboard"])
def test_training_logs_to_tensorboard_only_when_asked(base_model, tmp_path, report_to):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    examples = build_examples(U1, U2.iloc[0:0], MathEnvironment(), tokenizer)
    logs = tmp_path / "iter1" / "tensorboard"
    train(base_model, examples * 2, {**SETTINGS, "max_length": 128, "report_to": report_to},
          tmp_path / "iter1" / "checkpoint", run_name="math/envisions/iter1", log_dir=logs)
    events = sorted(logs.glob("sft/events.out.tfevents.*"))
    if report_to == "none":
        assert not logs.exists()
        return
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    text = accumulator.Tags()["tensors"] and accumulator.Tensors("args/text_summary")[0].tensor_proto.string_val[0]
    assert b'"run_name": "math/envisions/iter1/sft"' in text  # the run and iteration name the run
