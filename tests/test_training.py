"""Training on L1 + L2: prompt tokens are masked, the completion (with EOS) is learned."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from envisions_flow.environments.math import MathEnvironment
from envisions_flow.training import build_examples, make_trainer, train

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
