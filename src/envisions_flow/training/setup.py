"""How a training job holds the model: precision, DeepSpeed ZeRO and gradient checkpointing, `auto` resolved.

`training.precision`, `training.deepspeed_config` and `training.gradient_checkpointing` default to
`auto`. A job resolves them from the model's shape (its config.json), the processes it trains in and
the memory of its GPUs (workflow/memory_model.py): bf16 mixed precision on GPUs that have bf16 (fp16
on those that do not, fp32 on CPUs), always with fp32 master weights (ZeRO keeps its own fp32
copies), and the cheapest of these that fits: neither ZeRO nor checkpointing, checkpointing, ZeRO-3
(several processes), ZeRO-3 with checkpointing, ZeRO-3 with the optimizer offloaded to the CPU. On a
CPU nothing is switched on. The start-up check (workflow/memory_plan.py) resolves them the same way
from the resources the profile gives each rule, so what it reports is what the job does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from envisions_flow.workflow.memory_model import Estimate, ModelShape, TrainingSetup, training_estimate

AUTO = "auto"


def zero3_config(offload_optimizer: bool = False) -> dict[str, Any]:
    """DeepSpeed ZeRO-3 as config/deepspeed/zero3.json has it (its `auto` values filled from the training keys)."""
    return {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu", "pin_memory": True} if offload_optimizer else {"device": "none"},
            "offload_param": {"device": "none"},
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1000000,
        "wall_clock_breakdown": False,
    }


def deepspeed_file_setup(path: str | Path) -> dict[str, Any]:
    """ZeRO stage and offloads of a DeepSpeed JSON file (`training.deepspeed_config`)."""
    try:
        zero = json.loads(Path(path).read_text()).get("zero_optimization") or {}
    except (OSError, ValueError) as error:
        raise ValueError(f"training.deepspeed_config: cannot read {path}: {error}") from None
    device = lambda key: (zero.get(key) or {}).get("device", "none") not in ("none", None)  # noqa: E731
    return {"zero_stage": int(zero.get("stage", 0)), "offload_optimizer": device("offload_optimizer"),
            "offload_params": device("offload_param")}


def resolved_precision(settings: Mapping[str, Any], on_gpu: bool, bf16_supported: bool = True) -> str:
    precision = settings.get("precision", AUTO)
    if precision == AUTO:
        return ("bf16" if bf16_supported else "fp16") if on_gpu else "fp32"
    return precision


def candidates(settings: Mapping[str, Any], world: int, on_gpu: bool) -> list[dict[str, Any]]:
    """The ZeRO and checkpointing choices the settings allow, cheapest to run first."""
    deepspeed = settings.get("deepspeed_config", AUTO)
    if deepspeed == AUTO:
        zero = [{"zero_stage": 0}]
        if on_gpu:
            zero += [{"zero_stage": 3}] if world > 1 else []
            zero += [{"zero_stage": 3, "offload_optimizer": True}]
    elif deepspeed:
        zero = [deepspeed_file_setup(deepspeed)]
    else:
        zero = [{"zero_stage": 0}]
    checkpointing = settings.get("gradient_checkpointing", AUTO)
    options = [False, True] if checkpointing == AUTO and on_gpu else [checkpointing is True]
    return [{**choice, "checkpointing": flag} for choice in zero for flag in options]


def resolve(shape: ModelShape, settings: Mapping[str, Any], *, world: int, nodes: int = 1, on_gpu: bool,
            gpu_memory: int | None, bf16_supported: bool = True, lora: Mapping[str, Any] | None = None,
            quantized: bool = False, reference: bool = False, pairs: bool = False) -> tuple[TrainingSetup, Estimate]:
    """The setup a job trains with, and its estimate: the first candidate that fits, else the most frugal one."""
    precision = resolved_precision(settings, on_gpu, bf16_supported)
    batch, length = int(settings["per_device_batch_size"]), int(settings["max_length"])
    chosen = None
    for choice in candidates(settings, world, on_gpu):
        setup = TrainingSetup(precision=precision, lora=lora, quantized=quantized, reference=reference, pairs=pairs,
                              **choice)
        estimate = training_estimate(shape, setup, world, nodes, batch, length, on_gpu)
        chosen = (setup, estimate)
        if gpu_memory is None or estimate.fits(gpu_memory, None):
            break
    assert chosen is not None
    return chosen


def deepspeed_argument(settings: Mapping[str, Any], setup: TrainingSetup) -> str | dict[str, Any] | None:
    """What TrainingArguments(deepspeed=...) gets: the user's file, the ZeRO-3 config `auto` chose, or None."""
    configured = settings.get("deepspeed_config", AUTO)
    if configured != AUTO:
        return configured or None
    if setup.zero_stage == 0:
        return None
    return zero3_config(offload_optimizer=setup.offload_optimizer)
