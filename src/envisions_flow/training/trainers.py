"""Training the policy on L1 + L2 (paper Eq. 4 and 6) with TRL's SFTTrainer, and DPO for the baselines.

Both losses are plain next-token loss on the positive program a⁺; they differ
only in the prompt: U1 examples use the zero-shot prompt for x, U2 examples the
self-refine prompt with the negative a⁻ as the program to repair. Prompt tokens
are masked (TRL's completion-only loss) and EOS is appended. The same code path
takes DeepSpeed when a config file is given (`training.deepspeed_config`, e.g.
config/deepspeed/zero3.json). Under torchrun (src/envisions_flow/training/launch.py) every
rank runs `train`; only rank 0 touches the file system, and the checkpoint is
renamed into place once, by rank 0, after all ranks have finished.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from envisions_flow.workflow.artifacts import write_json


def trainer_arguments(settings: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Arguments shared by the SFT and DPO trainers (batch, schedule, precision, seeds)."""
    import torch

    on_gpu = torch.cuda.is_available()
    per_device = int(settings["per_device_batch_size"])
    # under torchrun each rank is one device; a single process uses all GPUs it sees (DataParallel)
    devices = world_size() if world_size() > 1 else (max(1, torch.cuda.device_count()) if on_gpu else 1)
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
        "use_cpu": not on_gpu and world_size() > 1 and not settings.get("deepspeed_config"),
        "seed": int(settings["seed"]),
        "data_seed": int(settings["seed"]),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "dataset_num_proc": None,
    }


def world_size() -> int:
    """Processes training together (torchrun sets WORLD_SIZE in each of them); 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    return int(os.environ.get("RANK") or 0) == 0


def barrier() -> None:
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


def load_tokenizer(model: str | Path):
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

    config = SFTConfig(**trainer_arguments(settings, output_dir), completion_only_loss=True,
                       train_sampling_strategy="group_by_length")  # less padding per batch
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if config.bf16 else torch.float32,
                                                 attn_implementation=attention_implementation(config.bf16))
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=load_tokenizer(base_model))


def make_dpo_trainer(sft_model: str | Path, pairs: list[dict[str, str]], settings: dict[str, Any],
                     dpo: dict[str, Any], output_dir: Path):
    """A DPOTrainer whose policy and reference both start from `sft_model` (the reference stays frozen)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    arguments = trainer_arguments(settings, output_dir)
    arguments.update({"learning_rate": float(dpo["learning_rate"]), "warmup_steps": float(dpo["warmup_ratio"]),
                      "num_train_epochs": float(dpo.get("epochs") or settings["epochs"])})
    config = DPOConfig(**arguments, beta=float(dpo["beta"]),
                       model_init_kwargs={"dtype": "bfloat16" if arguments["bf16"] else "float32",
                                          "attn_implementation": attention_implementation(arguments["bf16"])})
    return DPOTrainer(model=str(sft_model), args=config, train_dataset=Dataset.from_list(pairs),
                      processing_class=load_tokenizer(sft_model))


def _lora_config(lora: dict[str, Any]):
    """peft's LoraConfig from the `mixture.lora` keys."""
    from peft import LoraConfig

    return LoraConfig(r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")


def _quantization(lora: dict[str, Any] | None) -> dict[str, Any]:
    """QLoRA (4-bit NF4 base weights) where a GPU and bitsandbytes exist; full precision otherwise."""
    import torch

    if lora is None or not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        return {}
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_compute_dtype=torch.bfloat16)}


def _merge_adapter(base_model: str | Path, adapter_dir: Path, out_dir: Path) -> None:
    """A LoRA adapter trained on a 4-bit base, merged into the base loaded in bf16 and saved as a plain model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16)
    PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().save_pretrained(str(out_dir))
    shutil.rmtree(adapter_dir, ignore_errors=True)


def train_trajectories(init_model: str | Path, examples: Sequence[Mapping[str, Any]], settings: dict[str, Any],
                       out_dir: str | Path, lora: dict[str, Any] | None = None) -> dict[str, Any]:
    """SFT on multi-turn conversations (`trajectory_example` rows: loss on the agent's turns only).

    IPR's base agent (full fine-tuning on expert trajectories) and the mixture runs (LoRA,
    `lora` = the `mixture.lora` keys) train here. A LoRA adapter is merged into the saved
    weights, so every later stage loads a plain checkpoint. Saved atomically like `train`.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    main = is_main_process()
    metrics: dict[str, Any] = {"init_model": str(init_model), "train_examples": len(examples),
                               "lora": dict(lora) if lora else None, "processes": world_size()}
    if not examples:
        if main:
            shutil.copytree(init_model, staging)
        metrics["note"] = "nothing to train on; initial model copied"
    else:
        config = SFTConfig(**trainer_arguments(settings, staging / "trainer"), train_sampling_strategy="group_by_length")
        quantization = _quantization(lora)
        model = AutoModelForCausalLM.from_pretrained(
            init_model, dtype=torch.bfloat16 if config.bf16 else torch.float32,
            attn_implementation=attention_implementation(config.bf16), **quantization)
        dataset = Dataset.from_list([{"input_ids": list(e["input_ids"]), "assistant_masks": list(e["assistant_masks"])}
                                     for e in examples])
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=load_tokenizer(init_model),
                             peft_config=_lora_config(lora) if lora else None)
        metrics["sft"] = save_checkpoint(trainer, staging, lora_base=init_model if lora else None, quantized=bool(quantization))
    if main:
        publish_checkpoint(metrics, staging, out_dir)
    return metrics


def staging_dir(out_dir: Path) -> Path:
    """The directory a checkpoint is written to before it is renamed into place, emptied by rank 0.

    The other ranks write nothing before the trainer's first collective, which waits for rank 0.
    """
    staging = out_dir.with_name(out_dir.name + ".partial")
    if is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish_checkpoint(metrics: dict[str, Any], staging: Path, out_dir: Path) -> None:
    """Rank 0: training.json beside the weights, then the finished checkpoint renamed into place."""
    write_json(metrics, staging / "training.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def save_checkpoint(trainer, out_dir: Path, lora_base: str | Path | None = None, quantized: bool = False) -> dict[str, Any]:
    """Train, then save the weights and tokenizer to `out_dir`.

    With `lora_base`, the LoRA adapter is merged first, so every later stage loads a plain
    checkpoint: into the trained weights, or (QLoRA, `quantized`) into `lora_base` reloaded in
    bf16, not into the 4-bit weights it trained on.
    """
    result = trainer.train()
    if lora_base is not None and quantized:
        trainer.model.save_pretrained(str(out_dir / "adapter"))
        if is_main_process():
            _merge_adapter(lora_base, out_dir / "adapter", out_dir)
    else:
        if lora_base is not None:
            trainer.model = trainer.model.merge_and_unload()
        trainer.save_model(str(out_dir))  # every rank: under ZeRO-3 it gathers the sharded weights; rank 0 writes
    if is_main_process():
        trainer.processing_class.save_pretrained(str(out_dir))
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    barrier()  # the next stage (DPO after SFT) reads what rank 0 wrote
    return {**result.metrics, "global_step": result.global_step}


def train(init_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], out_dir: str | Path,
          pairs: list[dict[str, str]] = (), dpo: dict[str, Any] | None = None) -> dict:
    """Fine-tune `init_model` on `examples` (SFT), then on `pairs` (DPO) when given; save to `out_dir` atomically.

    ENVISIONS passes the base model and no pairs: the policy is trained from
    scratch each iteration. With nothing to learn from, the checkpoint is a copy
    of `init_model`, so every iteration has a self-contained policy.
    """
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    main = is_main_process()
    metrics: dict[str, Any] = {"init_model": str(init_model), "train_examples": len(examples),
                               "l1_examples": sum(e["loss"] == "L1" for e in examples),
                               "l2_examples": sum(e["loss"] == "L2" for e in examples), "dpo_pairs": len(pairs),
                               "processes": world_size()}
    current = Path(init_model)
    if examples:
        sft_dir = staging / "sft" if pairs else staging
        metrics["sft"] = save_checkpoint(make_trainer(current, examples, settings, sft_dir / "trainer"), sft_dir)
        current = sft_dir
    if pairs:
        metrics["dpo"] = save_checkpoint(make_dpo_trainer(current, list(pairs), settings, dpo or {}, staging / "trainer"),
                               staging)
        if main:
            shutil.rmtree(staging / "sft", ignore_errors=True)
    elif not examples:
        if main:
            shutil.copytree(init_model, staging)
        metrics["note"] = "nothing to train on; initial model copied"
    if main:  # rank 0 alone writes training.json and renames the checkpoint into place
        publish_checkpoint(metrics, staging, out_dir)
    return metrics
