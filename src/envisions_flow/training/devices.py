"""What a training process needs to know about where it runs: its rank, its devices, how it holds the model.

Shared by the SFT/DPO trainers (trainers.py) and IPR's (ipr_trainer.py): the precision, ZeRO and
checkpointing a job resolves for its GPUs (training/setup.py), the model loaded accordingly, the
TrainingArguments that follow, and the logging callbacks (`training.report_to`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from envisions_flow.training.setup import deepspeed_argument, resolve
from envisions_flow.workflow.memory_model import GIB, ModelShape, TrainingSetup

log = logging.getLogger("envisions_flow")


def world_size() -> int:
    """Processes training together (torchrun sets WORLD_SIZE in each of them); 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    return int(os.environ.get("RANK") or 0) == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK") or 0)


def barrier() -> None:
    """Wait for every rank (a no-op when training runs as one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def attention_implementation(half_precision: bool) -> str:
    """FlashAttention-2 on CUDA in 16 bits when `flash_attn` is installed, PyTorch's SDPA otherwise."""
    import torch

    if half_precision and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def job_setup(model_dir: str | Path, settings: dict[str, Any], **kind: Any) -> TrainingSetup:
    """Precision, ZeRO and checkpointing for this job, `auto` resolved against the GPUs it has (training/setup.py).

    `kind`: `lora`, `quantized`, `reference` (DPO) and `pairs` (DPO, IPR), as `setup.resolve` takes them.
    """
    import torch

    on_gpu = torch.cuda.is_available()
    world = world_size()
    nodes = max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE") or world))
    memory = torch.cuda.get_device_properties(local_rank()).total_memory if on_gpu else None
    setup, estimate = resolve(ModelShape.from_dir(model_dir), settings, world=world, nodes=nodes, on_gpu=on_gpu,
                              gpu_memory=memory, bf16_supported=on_gpu and torch.cuda.is_bf16_supported(), **kind)
    if is_main_process():
        log.info("training with %s: about %.1f GiB per device%s", setup.describe(), estimate.device / GIB,
                 f" of {memory / GIB:.0f} GiB" if memory else "")
    return setup


def compute_dtype(setup: TrainingSetup):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[setup.precision]


def load_model(model: str | Path, setup: TrainingSetup, trained: bool = True, **extra: Any):
    """The model as the setup holds it; `trained=False` for one that is only run (a DPO or IPR reference).

    Full fine-tuning without DeepSpeed loads fp32 weights, the master copy AdamW updates while
    autocast computes in 16 bits: AdamW on bf16 weights would round most updates at lr 2e-5 away.
    Under DeepSpeed the 16-bit model is loaded (ZeRO-3: partitioned while it loads) and ZeRO keeps
    the fp32 copies; LoRA keeps the frozen base in 16 bits and peft its adapters in fp32; a model
    that is only run is loaded in the compute dtype. Without DeepSpeed each rank loads straight
    onto its own GPU rather than through a copy in host memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    full_master = trained and not setup.zero_stage and setup.lora is None
    dtype = torch.float32 if full_master else compute_dtype(setup)
    if torch.cuda.is_available() and not setup.zero_stage:
        extra.setdefault("device_map", {"": local_rank()})
    loaded = AutoModelForCausalLM.from_pretrained(
        model, dtype=dtype, attn_implementation=attention_implementation(setup.precision != "fp32"), **extra)
    return loaded if trained else loaded.eval().requires_grad_(False)


def checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing (non-reentrant: what ZeRO-3 and DDP work with) under the installed transformers' name.

    transformers 5.23 renamed `gradient_checkpointing` to `activation_checkpointing` and warns on the old name.
    """
    from transformers import TrainingArguments

    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def trainer_arguments(settings: dict[str, Any], output_dir: Path, setup: TrainingSetup,
                      run_name: str | None = None) -> dict[str, Any]:
    """Arguments shared by the SFT, DPO and IPR trainers (batch, schedule, precision, ZeRO, checkpointing, seeds)."""
    import torch

    on_gpu = torch.cuda.is_available()
    per_device = int(settings["per_device_batch_size"])
    # under torchrun each rank is one device; a single process uses all GPUs it sees (DataParallel)
    devices = world_size() if world_size() > 1 else (max(1, torch.cuda.device_count()) if on_gpu else 1)
    deepspeed = deepspeed_argument(settings, setup)
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
        # autocast over the fp32 master weights load_model gives, or DeepSpeed's own fp32 copies
        "bf16": setup.precision == "bf16",
        "fp16": setup.precision == "fp16",
        **checkpointing_arguments(setup.checkpointing),
        "deepspeed": deepspeed,
        # CPU processes are distributed (torchrun, gloo) and autocast to bf16 by accelerate only with use_cpu;
        # DeepSpeed sets up its own
        "use_cpu": not on_gpu and not deepspeed,
        "seed": int(settings["seed"]),
        "data_seed": int(settings["seed"]),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": ["wandb"] if settings.get("report_to") == "wandb" else [],
        "run_name": run_name,
        "dataset_num_proc": None,
    }


def reporting_callbacks(settings: dict[str, Any], log_dir: Path | None) -> list[Any]:
    """`training.report_to: tensorboard`: event files under `log_dir`, written by rank 0 alone, no network needed."""
    if settings.get("report_to") != "tensorboard" or log_dir is None or not is_main_process():
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(SummaryWriter(log_dir=str(log_dir)))]
