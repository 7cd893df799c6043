"""Training the policy on L1 + L2 (paper Eq. 4 and 6) with TRL's SFTTrainer, and DPO for the baselines.

Both losses are plain next-token loss on the positive program a⁺; they differ
only in the prompt: U1 examples use the zero-shot prompt for x, U2 examples the
self-refine prompt with the negative a⁻ as the program to repair. Prompt tokens
are masked (TRL's completion-only loss) and EOS is appended. The same code path
takes DeepSpeed when a config file is given (`training.deepspeed_config`, e.g.
config/deepspeed/zero3.json). Under torchrun (src/envisions_flow/launch.py) every
rank runs `train`; only rank 0 touches the file system, and the checkpoint is
renamed into place once, by rank 0, after all ranks have finished.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import write_json
from .environments.base import Environment, Messages, Task
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


def build_pairs(pairs: pd.DataFrame, environment: Environment, tokenizer) -> list[dict[str, str]]:
    """Preference examples for DPO: the zero-shot prompt for x, a⁺ chosen, a⁻ rejected."""
    examples = []
    for row in pairs.itertuples():
        prompt = render_chat(tokenizer, environment.explore_prompt(Task(row.id, row.question, ""), few_shot=False))
        examples.append({"prompt": prompt, "chosen": environment.render_solution(row.positive),
                         "rejected": environment.render_solution(row.negative)})
    return examples


def trajectory_example(tokenizer, messages: Messages, first_trained: int = 0) -> dict[str, list[int]]:
    """A multi-turn conversation as `input_ids` and `assistant_masks` (1 on the tokens the agent wrote).

    Step-mode trajectories (agents.py) interleave the agent's actions with the environment's
    observations; only the agent's turns are its own tokens, so only those carry loss (IPR Eq. 2)
    and count in DPO's sequence log-probs. An assistant message counts from index
    `first_trained` on, its end-of-turn token included, which is how a step pair trains on the
    suffix e_{t:n} after a shared prefix e_{t-1}. The spans come from rendering the chat
    template on growing prefixes, so they hold for any template that extends a conversation
    by appending to its text (ChatML, Llama, ...); TRL's SFTTrainer takes such rows as they are.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or index < first_trained:
            continue
        start = len(tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True))
        end = len(tokenizer.apply_chat_template(messages[: index + 1], tokenize=False))
        if text[:end] != tokenizer.apply_chat_template(messages[: index + 1], tokenize=False):
            raise ValueError("the chat template does not render a conversation as the extension of its prefixes")
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    masks = [int(any(start <= first < end for start, end in spans)) for first, _ in encoded["offset_mapping"]]
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": masks}


def _trainer_arguments(settings: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Arguments shared by the SFT and DPO trainers (batch, schedule, precision, seeds)."""
    import torch

    on_gpu = torch.cuda.is_available()
    per_device = int(settings["per_device_batch_size"])
    # under torchrun each rank is one device; a single process uses all GPUs it sees (DataParallel)
    devices = _world_size() if _world_size() > 1 else (max(1, torch.cuda.device_count()) if on_gpu else 1)
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": float(settings["epochs"]),
        "learning_rate": float(settings["learning_rate"]),
        "lr_scheduler_type": settings["lr_scheduler"],
        "warmup_steps": float(settings["warmup_ratio"]),  # a float below 1 is a ratio of all steps
        "weight_decay": float(settings["weight_decay"]),
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": max(1, int(settings["effective_batch_size"]) // (per_device * devices)),
        "max_length": int(settings["max_length"]),
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "gradient_checkpointing": bool(settings.get("gradient_checkpointing", False)),
        # non-reentrant checkpointing is what DeepSpeed ZeRO-3 and DDP work with
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if settings.get("gradient_checkpointing") else None,
        "deepspeed": settings.get("deepspeed_config") or None,
        # several CPU processes (torchrun, gloo) are distributed for accelerate only with use_cpu; DeepSpeed sets up its own
        "use_cpu": not on_gpu and _world_size() > 1 and not settings.get("deepspeed_config"),
        "seed": int(settings["seed"]),
        "data_seed": int(settings["seed"]),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "dataset_num_proc": None,
    }


def _world_size() -> int:
    """Processes training together (torchrun sets WORLD_SIZE in each of them); 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def _is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    return int(os.environ.get("RANK") or 0) == 0


def _barrier() -> None:
    """Wait for every rank (a no-op when training runs as one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def attention_implementation(bf16: bool) -> str:
    """FlashAttention-2 on CUDA in bf16 when `flash_attn` is installed, PyTorch's SDPA otherwise."""
    import torch

    if bf16 and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _tokenizer(model: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def make_trainer(base_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], output_dir: Path):
    """An SFTTrainer over prompt/completion examples with prompt tokens masked."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**_trainer_arguments(settings, output_dir), completion_only_loss=True,
                       train_sampling_strategy="group_by_length")  # less padding per batch
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if config.bf16 else torch.float32,
                                                 attn_implementation=attention_implementation(config.bf16))
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=_tokenizer(base_model))


def make_dpo_trainer(sft_model: str | Path, pairs: list[dict[str, str]], settings: dict[str, Any],
                     dpo: dict[str, Any], output_dir: Path):
    """A DPOTrainer whose policy and reference both start from `sft_model` (the reference stays frozen)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    arguments = _trainer_arguments(settings, output_dir)
    arguments.update({"learning_rate": float(dpo["learning_rate"]), "warmup_steps": float(dpo["warmup_ratio"]),
                      "num_train_epochs": float(dpo.get("epochs") or settings["epochs"])})
    config = DPOConfig(**arguments, beta=float(dpo["beta"]),
                       model_init_kwargs={"dtype": "bfloat16" if arguments["bf16"] else "float32",
                                          "attn_implementation": attention_implementation(arguments["bf16"])})
    return DPOTrainer(model=str(sft_model), args=config, train_dataset=Dataset.from_list(pairs),
                      processing_class=_tokenizer(sft_model))


def _save(trainer, out_dir: Path) -> dict[str, Any]:
    result = trainer.train()
    trainer.save_model(str(out_dir))  # every rank: under ZeRO-3 it gathers the sharded weights; rank 0 writes
    if _is_main_process():
        trainer.processing_class.save_pretrained(str(out_dir))
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    _barrier()  # the next stage (DPO after SFT) reads what rank 0 wrote
    return {**result.metrics, "global_step": result.global_step}


def train(init_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], out_dir: str | Path,
          pairs: list[dict[str, str]] = (), dpo: dict[str, Any] | None = None) -> dict:
    """Fine-tune `init_model` on `examples` (SFT), then on `pairs` (DPO) when given; save to `out_dir` atomically.

    ENVISIONS passes the base model and no pairs: the policy is trained from
    scratch each iteration. With nothing to learn from, the checkpoint is a copy
    of `init_model`, so every iteration has a self-contained policy.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    main = _is_main_process()
    if main:  # the other ranks write nothing before the trainer's first collective, which waits for rank 0
        shutil.rmtree(staging, ignore_errors=True)
    metrics: dict[str, Any] = {"init_model": str(init_model), "train_examples": len(examples),
                               "l1_examples": sum(e["loss"] == "L1" for e in examples),
                               "l2_examples": sum(e["loss"] == "L2" for e in examples), "dpo_pairs": len(pairs),
                               "processes": _world_size()}
    current = Path(init_model)
    if examples:
        sft_dir = staging / "sft" if pairs else staging
        metrics["sft"] = _save(make_trainer(current, examples, settings, sft_dir / "trainer"), sft_dir)
        current = sft_dir
    if pairs:
        metrics["dpo"] = _save(make_dpo_trainer(current, list(pairs), settings, dpo or {}, staging / "trainer"),
                               staging)
        if main:
            shutil.rmtree(staging / "sft", ignore_errors=True)
    elif not examples:
        if main:
            shutil.copytree(init_model, staging)
        metrics["note"] = "nothing to train on; initial model copied"
    if not main:
        return metrics  # rank 0 alone writes training.json and renames the checkpoint into place
    write_json(metrics, staging / "training.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return metrics
