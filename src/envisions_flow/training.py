"""Training the policy on L1 + L2 (paper Eq. 4 and 6) with TRL's SFTTrainer.

Both losses are plain next-token loss on the positive program a⁺; they differ
only in the prompt: U1 examples use the zero-shot prompt for x, U2 examples the
self-refine prompt with the negative a⁻ as the program to repair. Prompt tokens
are masked (TRL's completion-only loss) and EOS is appended. The same code path
takes DeepSpeed when a config file is given, on GPUs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import write_json
from .environments.base import Environment, Task
from .generation import render_chat


def build_examples(u1: pd.DataFrame, u2: pd.DataFrame, environment: Environment, tokenizer) -> list[dict[str, str]]:
    """Prompt/completion pairs for L1 (from U1) and L2 (from U2), prompts rendered as at sampling time."""
    examples = []
    for row in u1.itertuples():
        task = Task(row.id, row.question, "")
        prompt = render_chat(tokenizer, environment.explore_prompt(task, few_shot=False))
        examples.append({"prompt": prompt, "completion": environment.render_solution(row.positive), "loss": "L1"})
    for row in u2.itertuples():
        task = Task(row.id, row.question, "")
        prompt = render_chat(tokenizer, environment.refine_prompt(task, row.negative))
        examples.append({"prompt": prompt, "completion": environment.render_solution(row.positive), "loss": "L2"})
    return examples


def make_trainer(base_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], output_dir: Path):
    """An SFTTrainer over prompt/completion examples with prompt tokens masked."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    on_gpu = torch.cuda.is_available()
    per_device = int(settings["per_device_batch_size"])
    devices = max(1, torch.cuda.device_count()) if on_gpu else 1
    accumulation = max(1, int(settings["effective_batch_size"]) // (per_device * devices))
    config = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=float(settings["epochs"]),
        learning_rate=float(settings["learning_rate"]),
        lr_scheduler_type=settings["lr_scheduler"],
        warmup_steps=float(settings["warmup_ratio"]),  # a float below 1 is a ratio of all steps
        weight_decay=float(settings["weight_decay"]),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_length=int(settings["max_length"]),
        completion_only_loss=True,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=bool(settings.get("gradient_checkpointing", False)),
        deepspeed=settings.get("deepspeed_config") or None,
        seed=int(settings["seed"]),
        data_seed=int(settings["seed"]),
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataset_num_proc=None,
        train_sampling_strategy="group_by_length",  # less padding per batch
    )
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if config.bf16 else torch.float32)
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def train(base_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], out_dir: str | Path) -> dict:
    """Train a fresh copy of the base model and save it, with `training.json`, to `out_dir` (atomically)."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if not examples:
        # Nothing was solved: the policy of this iteration is the base model itself, copied so the
        # checkpoint is self-contained.
        shutil.copytree(base_model, staging)
        metrics = {"train_examples": 0, "note": "no positive trajectories; base model copied"}
    else:
        trainer = make_trainer(base_model, examples, settings, staging / "trainer")
        result = trainer.train()
        trainer.save_model(str(staging))
        trainer.processing_class.save_pretrained(str(staging))
        shutil.rmtree(staging / "trainer", ignore_errors=True)
        metrics = {"train_examples": len(examples), **result.metrics}
    metrics.update({"l1_examples": sum(e["loss"] == "L1" for e in examples),
                    "l2_examples": sum(e["loss"] == "L2" for e in examples)})
    write_json(metrics, staging / "training.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return metrics
