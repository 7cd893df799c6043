"""Training the policy on L1 + L2 (paper Eq. 4 and 6) with TRL's SFTTrainer, and DPO for the baselines.

Both losses are plain next-token loss on the positive program a⁺; they differ
only in the prompt: U1 examples use the zero-shot prompt for x, U2 examples the
self-refine prompt with the negative a⁻ as the program to repair. Prompt tokens
are masked (TRL's completion-only loss) and EOS is appended. Precision, DeepSpeed
ZeRO and gradient checkpointing are what the job resolves for its GPUs
(training/devices.py, `auto` by default). Under torchrun (training/launch.py) every
rank runs `train`; only rank 0 touches the file system, and the checkpoint is
renamed into place once, by rank 0, after all ranks have finished. Checkpoints are
saved in the training dtype: bf16 after bf16 mixed precision, fp32 after fp32.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from envisions_flow.training.devices import (
    barrier,
    is_main_process,
    job_setup,
    load_model,
    reporting_callbacks,
    trainer_arguments,
    world_size,
)
from envisions_flow.workflow.artifacts import write_json


def load_tokenizer(model: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def make_trainer(base_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], output_dir: Path,
                 run_name: str | None = None, log_dir: Path | None = None):
    """An SFTTrainer over prompt/completion examples with prompt tokens masked."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    setup = job_setup(base_model, settings)
    config = SFTConfig(**trainer_arguments(settings, output_dir, setup, run_name), completion_only_loss=True,
                       train_sampling_strategy="group_by_length")  # less padding per batch
    model = load_model(base_model, setup)
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=load_tokenizer(base_model),
                      callbacks=reporting_callbacks(settings, log_dir))


def make_dpo_trainer(sft_model: str | Path, pairs: list[dict[str, str]], settings: dict[str, Any],
                     dpo: dict[str, Any], output_dir: Path, run_name: str | None = None, log_dir: Path | None = None):
    """A DPOTrainer whose policy and reference both start from `sft_model` (the reference, frozen, in 16 bits)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    setup = job_setup(sft_model, settings, reference=True, pairs=True)
    arguments = trainer_arguments(settings, output_dir, setup, run_name)
    arguments.update({"learning_rate": float(dpo["learning_rate"]), "warmup_steps": float(dpo["warmup_ratio"]),
                      "num_train_epochs": float(dpo.get("epochs") or settings["epochs"])})
    config = DPOConfig(**arguments, beta=float(dpo["beta"]))  # before loading: ZeRO-3 partitions while it loads
    return DPOTrainer(model=load_model(sft_model, setup), ref_model=load_model(sft_model, setup, trained=False),
                      args=config, train_dataset=Dataset.from_list(pairs), processing_class=load_tokenizer(sft_model),
                      callbacks=reporting_callbacks(settings, log_dir))


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


def merge_adapter(base_model: str | Path, adapter_dir: Path, out_dir: Path, dtype) -> None:
    """Rank 0: the saved LoRA adapter merged into the base reloaded whole in `dtype`, saved as a plain model.

    Merging in the trained model is not possible in general: under ZeRO-3 each rank holds a
    slice of every weight, and under QLoRA the base is 4-bit. The adapter the trainer saved
    (gathered, under ZeRO-3) is merged into a fresh copy of the base instead, loaded whole:
    ZeRO-3's partitioning while loading, which needs every rank, is switched off (training is over).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().save_pretrained(str(out_dir))
    shutil.rmtree(adapter_dir, ignore_errors=True)


def train_trajectories(init_model: str | Path, examples: Sequence[Mapping[str, Any]], settings: dict[str, Any],
                       out_dir: str | Path, lora: dict[str, Any] | None = None, run_name: str | None = None,
                       log_dir: Path | None = None) -> dict[str, Any]:
    """SFT on multi-turn conversations (`trajectory_example` rows: loss on the agent's turns only).

    IPR's base agent (full fine-tuning on expert trajectories) and the mixture runs (LoRA,
    `lora` = the `mixture.lora` keys) train here. A LoRA adapter is merged into the saved
    weights, so every later stage loads a plain checkpoint. Saved atomically like `train`.
    """
    from datasets import Dataset
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
        quantization = _quantization(lora)
        setup = job_setup(init_model, settings, lora=lora, quantized=bool(quantization))
        config = SFTConfig(**trainer_arguments(settings, staging / "trainer", setup, run_name),
                           train_sampling_strategy="group_by_length")
        model = load_model(init_model, setup, **quantization)
        dataset = Dataset.from_list([{"input_ids": list(e["input_ids"]), "assistant_masks": list(e["assistant_masks"])}
                                     for e in examples])
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=load_tokenizer(init_model),
                             peft_config=_lora_config(lora) if lora else None,
                             callbacks=reporting_callbacks(settings, log_dir))
        metrics["sft"] = save_checkpoint(trainer, staging, lora_base=init_model if lora else None)
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


def training_dtype(trainer):
    """The dtype a trainer computed in: its checkpoint is saved in it (bf16 or fp16 mixed precision; fp32)."""
    import torch

    return torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else torch.float32


def save_checkpoint(trainer, out_dir: Path, lora_base: str | Path | None = None) -> dict[str, Any]:
    """Train, then save the weights (in the training dtype) and tokenizer to `out_dir`.

    With `lora_base`, the adapter is saved and merged into `lora_base` (`merge_adapter`), so
    every later stage loads a plain checkpoint. Without DeepSpeed the fp32 master weights are
    cast to the 16-bit training dtype first; ZeRO-3 gathers its 16-bit weights itself.
    """
    result = trainer.train()
    save_trained(trainer, out_dir, lora_base)
    return {**result.metrics, "global_step": result.global_step}


def save_trained(trainer, out_dir: Path, lora_base: str | Path | None = None) -> None:
    """The saving half of `save_checkpoint`, for a trainer that has trained."""
    dtype = training_dtype(trainer)
    if lora_base is not None:
        trainer.save_model(str(out_dir / "adapter"))  # every rank: under ZeRO-3 it gathers the adapter
        if is_main_process():
            merge_adapter(lora_base, out_dir / "adapter", out_dir, dtype)
    else:
        if not trainer.is_deepspeed_enabled:
            trainer.model.to(dtype)
        trainer.save_model(str(out_dir))  # every rank: under ZeRO-3 it gathers the sharded weights; rank 0 writes
    if is_main_process():
        trainer.processing_class.save_pretrained(str(out_dir))
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    barrier()  # the next stage (DPO after SFT) reads what rank 0 wrote


def train(init_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], out_dir: str | Path,
          pairs: list[dict[str, str]] = (), dpo: dict[str, Any] | None = None, run_name: str | None = None,
          log_dir: Path | None = None) -> dict:
    """Fine-tune `init_model` on `examples` (SFT), then on `pairs` (DPO) when given; save to `out_dir` atomically.

    ENVISIONS passes the base model and no pairs: the policy is trained from
    scratch each iteration. With nothing to learn from, the checkpoint is a copy
    of `init_model`, so every iteration has a self-contained policy. `run_name` and
    `log_dir` name the run for `training.report_to` (the SFT and DPO stages log apart).
    """
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    main = is_main_process()
    metrics: dict[str, Any] = {"init_model": str(init_model), "train_examples": len(examples),
                               "l1_examples": sum(e["loss"] == "L1" for e in examples),
                               "l2_examples": sum(e["loss"] == "L2" for e in examples), "dpo_pairs": len(pairs),
                               "processes": world_size()}

    def report(stage: str) -> dict[str, Any]:
        return {"run_name": f"{run_name}/{stage}" if run_name else None,
                "log_dir": Path(log_dir) / stage if log_dir else None}

    current = Path(init_model)
    if examples:
        sft_dir = staging / "sft" if pairs else staging
        trainer = make_trainer(current, examples, settings, sft_dir / "trainer", **report("sft"))
        metrics["sft"] = save_checkpoint(trainer, sft_dir)
        current = sft_dir
    if pairs:
        trainer = make_dpo_trainer(current, list(pairs), settings, dpo or {}, staging / "trainer", **report("dpo"))
        metrics["dpo"] = save_checkpoint(trainer, staging)
        if main:
            shutil.rmtree(staging / "sft", ignore_errors=True)
    elif not examples:
        if main:
            shutil.copytree(init_model, staging)
        metrics["note"] = "nothing to train on; initial model copied"
    if main:  # rank 0 alone writes training.json and renames the checkpoint into place
        publish_checkpoint(metrics, staging, out_dir)
    return metrics
