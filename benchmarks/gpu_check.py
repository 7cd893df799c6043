"""A check of the GPU paths on one CUDA GPU: sampling, a mixed-precision training step, ZeRO-3; one JSON line each.

    .venv/bin/python benchmarks/gpu_check.py --model results/models/base            # on a CUDA GPU
    .venv/bin/python benchmarks/gpu_check.py --dry-run --model results/models/base  # the same checks on CPU

Each check runs in a process of its own, so that its peak memory is its own: on a GPU
`torch.cuda.max_memory_allocated`, on a CPU the peak resident size less what the process held
before loading the model. Each is compared with the memory plan's estimate for the same work
(workflow/memory_model.py) as `measured / planned`.

- `sampling`: the transformers backend samples K completions per prompt; every completion's
  summed log-prob against a direct forward pass (`logprob_error`, per token), tokens per second;
- `training_step`: one optimizer step of the SFT trainer at lr 2e-5 with the precision the job
  resolves (bf16 mixed on a GPU, fp32 on a CPU) over sequences of exactly `--length` tokens: the
  share of weights the step moved (AdamW's first step moves every weight with a gradient), the
  checkpoint's dtype;
- `zero3`: the same step under DeepSpeed ZeRO-3 (config/deepspeed/zero3.json) as a one-process
  job; skipped where DeepSpeed is not installed.

Without a GPU (or with `--dry-run`) the checks run on CPU; tests/test_gpu_check.py runs that mode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("sampling", "training_step", "zero3")


def _device(dry_run: bool) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not dry_run else "cpu"


def _peak_bytes(device: str, baseline: int) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def check_sampling(model: Path, device: str, args: argparse.Namespace) -> dict[str, Any]:
    from envisions_flow.generation.transformers_backend import TransformersBackend, sequence_logprob
    from envisions_flow.workflow.memory_model import ModelShape, sampling_estimate

    baseline = _resident_bytes()
    backend = TransformersBackend(model, batch_size=args.batch * args.k, progress=False)
    prompts = [backend.render([{"role": "user", "content": f"Write a Python function that returns {i} squared."}])
               for i in range(args.batch)]
    started = time.perf_counter()
    groups = backend.sample(prompts, args.k, args.new_tokens, seed=0)
    seconds = time.perf_counter() - started
    peak = _peak_bytes(device, baseline)
    tokens = sum(g.n_tokens for group in groups for g in group)
    errors = [abs(g.logprob_sum - sequence_logprob(backend.model, backend.tokenizer, prompt, g.token_ids)) / g.n_tokens
              for prompt, group in zip(prompts, groups) for g in group if g.n_tokens]
    prompt_tokens = max(len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    dtype_bytes = backend.model.dtype.itemsize
    planned = sampling_estimate(ModelShape.from_dir(model), args.batch * args.k, args.k, args.new_tokens, dtype_bytes,
                                prompt_tokens=prompt_tokens, on_gpu=device == "cuda").device
    tolerance = 0.05 if dtype_bytes == 2 else 1e-3
    return {"tokens": tokens, "tokens_per_s": round(tokens / seconds, 1), "logprob_error": max(errors),
            "peak_bytes": peak, "planned_bytes": planned, "measured_over_planned": round(peak / planned, 3),
            "ok": max(errors) <= tolerance}


def _examples(model: Path, length: int) -> list[dict[str, str]]:
    """Examples of at least `length` tokens (the trainer cuts them to `length`): every sequence as long as planned."""
    from envisions_flow.generation.base import render_chat
    from envisions_flow.training.trainers import load_tokenizer

    tokenizer = load_tokenizer(model)
    prompt = render_chat(tokenizer, [{"role": "user", "content": "Count to a thousand."}])
    completion = " ".join(str(i) for i in range(length))
    return [{"prompt": prompt, "completion": completion}] * 4


def check_training_step(model: Path, device: str, args: argparse.Namespace, deepspeed: str | None = None
                        ) -> dict[str, Any]:
    import torch

    from envisions_flow.training.devices import job_setup
    from envisions_flow.training.trainers import make_trainer, save_trained
    from envisions_flow.workflow.memory_model import ModelShape, training_estimate

    settings = {"epochs": 1, "learning_rate": 2e-5, "lr_scheduler": "constant", "warmup_ratio": 0.0,
                "weight_decay": 0.0, "effective_batch_size": args.train_batch, "per_device_batch_size": args.train_batch,
                "max_length": args.length, "seed": 0, "deepspeed_config": deepspeed, "gradient_checkpointing": False}
    baseline = _resident_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(model, _examples(model, args.length)[: args.train_batch], settings, Path(scratch) / "trainer")
        before = _weights(trainer, deepspeed is not None)
        trainer.train()
        peak = _peak_bytes(device, baseline)
        after = _weights(trainer, deepspeed is not None)  # the master weights, before they are saved in 16 bits
        moved = sum(int((after[name] != weights).sum()) for name, weights in before.items()) / sum(
            weights.numel() for weights in before.values())
        out = Path(scratch) / "checkpoint"
        save_trained(trainer, out)
        saved = json.loads((out / "config.json").read_text()).get("dtype")
    setup = job_setup(model, settings)
    planned = training_estimate(ModelShape.from_dir(model), setup, 1, 1, args.train_batch, args.length,
                                on_gpu=device == "cuda").device
    expected_dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[setup.precision]
    return {"setup": setup.describe(), "moved_share": round(moved, 4), "checkpoint_dtype": saved,
            "peak_bytes": peak, "planned_bytes": planned, "measured_over_planned": round(peak / planned, 3),
            "ok": moved > 0.5 and saved == expected_dtype, "torch": torch.__version__}


def _weights(trainer, zero3: bool) -> dict[str, Any]:
    """A copy of the weights the optimizer updates (ZeRO-3: gathered from their partitions)."""
    import contextlib

    parameters = dict(trainer.model.named_parameters())
    gather = contextlib.nullcontext()
    if zero3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(parameters.values()))
    with gather:
        return {name: parameter.detach().float().cpu().clone() for name, parameter in parameters.items()}


def check_zero3(model: Path, device: str, args: argparse.Namespace) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        return {"skipped": "deepspeed is not installed", "ok": True}
    if device == "cpu":
        _gloo_for_accelerate()
    return check_training_step(model, device, args, deepspeed=str(ROOT / "config" / "deepspeed" / "zero3.json"))


def _gloo_for_accelerate() -> None:
    """DeepSpeed on CPU (gloo): accelerate gives a distributed CPU run no backend of its own, and DeepSpeed's
    shared-memory allreduce, a C++ op compiled on first use (~25 s), is left to gloo (tests/launch_helpers.py)."""
    import deepspeed.ops
    import torch
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False

    original = PartialState._prepare_backend

    def prepare(self, cpu=False, sagemaker_dp=False, backend=None):
        chosen, kind = original(self, cpu, sagemaker_dp, backend)
        if kind == DistributedType.NO and not torch.cuda.is_available():
            return "gloo", DistributedType.MULTI_CPU
        return chosen, kind

    PartialState._prepare_backend = prepare


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One check in a process of its own (its peak memory its own); a one-process torch.distributed job for zero3."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if name == "zero3":
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(_free_port()))
        if args.dry_run or not _cuda():
            env["DS_ACCELERATOR"] = "cpu"
    argv = [sys.executable, __file__, "--only", name, *sys.argv[1:]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"check": name, "ok": False, "error": done.stderr[-3000:]}
    return json.loads(lines[-1])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a checkpoint directory (e.g. results/models/base)")
    parser.add_argument("--dry-run", action="store_true", help="run on CPU even where a GPU is available")
    parser.add_argument("--only", choices=CHECKS, help=argparse.SUPPRESS)
    parser.add_argument("--checks", nargs="*", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--batch", type=int, default=4, help="prompts sampled together (default: %(default)s)")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per sample (default: %(default)s)")
    parser.add_argument("--train-batch", type=int, default=2, help="sequences per training step (default: %(default)s)")
    parser.add_argument("--length", type=int, default=256, help="tokens per training sequence (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per check (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.only:
        device = _device(args.dry_run)
        result = {"sampling": check_sampling, "training_step": check_training_step, "zero3": check_zero3}[args.only](
            Path(args.model), device, args)
        print(json.dumps({"check": args.only, "device": _describe(device), **result}), flush=True)
        return 0
    results = [run_one(name, args) for name in args.checks]
    for result in results:
        print(json.dumps(result), flush=True)
    return 0 if all(result["ok"] for result in results) else 1


def _describe(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


if __name__ == "__main__":
    sys.exit(main())
