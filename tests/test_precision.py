"""Mixed precision: one step at lr 2e-5 moves the weights as fp32 training does; checkpoints keep the training dtype."""

from __future__ import annotations

import json

import pytest
import torch

from envisions_flow.generation.base import render_chat
from envisions_flow.training.trainers import load_tokenizer, make_trainer, save_trained

pytestmark = pytest.mark.slow

SETTINGS = {"epochs": 1, "learning_rate": 2e-5, "lr_scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0,
            "effective_batch_size": 2, "per_device_batch_size": 2, "max_length": 96, "seed": 0}


def _step(base_model, tmp_path, precision: str):
    """One optimizer step; the change of every weight the optimizer holds, and the saved checkpoint's config."""
    tokenizer = load_tokenizer(base_model)
    prompt = render_chat(tokenizer, [{"role": "user", "content": "Ava has 3 apples and gets 4 more. How many?"}])
    examples = [{"prompt": prompt, "completion": "def solution():\n    return 3 + 4"},
                {"prompt": prompt, "completion": "def solution():\n    apples = 3\n    return apples + 4"}]
    trainer = make_trainer(base_model, examples, {**SETTINGS, "precision": precision}, tmp_path / precision / "trainer")
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1
    after = dict(trainer.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())  # the master weights AdamW updated
    delta = torch.cat([(after[name].detach() - weights).flatten() for name, weights in before.items()])
    save_trained(trainer, tmp_path / precision / "checkpoint")
    return delta, before, json.loads((tmp_path / precision / "checkpoint" / "config.json").read_text())


def test_a_bf16_mixed_precision_step_moves_the_weights_as_an_fp32_step_does(base_model, tmp_path):
    fp32, weights, fp32_config = _step(base_model, tmp_path, "fp32")
    mixed, _, mixed_config = _step(base_model, tmp_path, "bf16")
    moved_fp32, moved_mixed = float((fp32 != 0).float().mean()), float((mixed != 0).float().mean())
    assert moved_fp32 > 0.9  # AdamW's first step moves every weight that has a gradient by about lr
    assert moved_mixed > 0.95 * moved_fp32
    assert float(torch.nn.functional.cosine_similarity(fp32, mixed, dim=0)) > 0.9
    assert (fp32_config["dtype"], mixed_config["dtype"]) == ("float32", "bfloat16")  # saved in the training dtype

    # The failure mode the fp32 master weights avoid: the same step taken by AdamW on bf16 weights rounds away.
    bf16 = [torch.nn.Parameter(w.detach().to(torch.bfloat16)) for w in weights.values()]
    optimizer = torch.optim.AdamW(bf16, lr=SETTINGS["learning_rate"], weight_decay=0.0)
    offset = 0
    for parameter in bf16:
        size = parameter.numel()
        parameter.grad = -fp32[offset:offset + size].view_as(parameter).to(torch.bfloat16)  # the step's direction
        offset += size
    starting = [p.detach().clone() for p in bf16]
    optimizer.step()
    moved_bf16 = sum(int((p.detach() != s).sum()) for p, s in zip(bf16, starting)) / offset
    assert moved_bf16 < 0.5 * moved_fp32
