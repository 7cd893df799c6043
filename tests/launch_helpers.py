"""Test helpers, imported by the torchrun ranks of test_launch.py; mainly DeepSpeed ZeRO-3 on CPU through the launcher.

DeepSpeed's CPU accelerator itself works here (DS_ACCELERATOR=cpu, gloo), but accelerate 1.15 gives a
run that is neither `use_cpu` nor on an accelerator no torch.distributed backend, so with DeepSpeed on
CPU its state counts 1 process while DeepSpeed's world has 2, and DeepSpeed stops with
"train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 2 != 2 * 1 * 2".
(`use_cpu` cannot be combined with DeepSpeed: TrainingArguments then leaves DeepSpeed out.) This shim
tells accelerate that the backend is gloo on CPU; everything else is the production path
(envisions_flow.training.trainers.train). It also records, per rank, how ZeRO-3 partitioned the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType

from envisions_flow.training import trainers as training

_prepare_backend = PartialState._prepare_backend
_save = training.save_checkpoint
_merge = training.merge_adapter


def _without_shared_memory_allreduce() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory allreduce (C++ with ninja, ~25 s) for the first
    process group on a machine, and again whenever the venv's path changes; gloo reduces the same tensors."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def _cpu_backend(self, cpu=False, sagemaker_dp=False, backend=None):
    chosen, kind = _prepare_backend(self, cpu, sagemaker_dp, backend)
    if kind == DistributedType.NO and not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) != -1:
        return "gloo", DistributedType.MULTI_CPU
    return chosen, kind


def _recording_save(trainer, out_dir, lora_base=None):
    parameters = list(trainer.model.parameters())
    record = {"zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage,
              "world_size": torch.distributed.get_world_size(),
              "local_numel": sum(p.ds_tensor.numel() for p in parameters if hasattr(p, "ds_tensor")),
              "full_numel": sum(p.ds_numel for p in parameters if hasattr(p, "ds_numel"))}
    Path(os.environ["ZERO3_RECORD_DIR"], f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    return _save(trainer, out_dir, lora_base)


def _copying_merge(base_model, adapter_dir, out_dir, dtype):
    """Keep a copy of the adapter the trainer saved (gathered from the ZeRO-3 partitions) before it is merged."""
    import shutil

    shutil.copytree(adapter_dir, Path(os.environ["ZERO3_RECORD_DIR"], "adapter"))
    return _merge(base_model, adapter_dir, out_dir, dtype)


def make_rank_dir(parent: str) -> None:
    """For the launcher's own test: each rank leaves a directory named after its RANK."""
    Path(parent, f"rank{os.environ['RANK']}").mkdir(parents=True)


def train(*args):
    PartialState._prepare_backend = _cpu_backend
    _without_shared_memory_allreduce()
    training.save_checkpoint = _recording_save
    return training.train(*args)


def train_trajectories(*args, **kwargs):
    PartialState._prepare_backend = _cpu_backend
    _without_shared_memory_allreduce()
    training.save_checkpoint = _recording_save
    training.merge_adapter = _copying_merge
    return training.train_trajectories(*args, **kwargs)
