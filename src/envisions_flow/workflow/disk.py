"""Disk a configuration needs: the base model once, and per run its checkpoints at the end and at most at once.

Checkpoints dominate (a 7B model is 13.5 GB in bfloat16). A run keeps its last iteration's checkpoint
and those in `keep_checkpoints`; every other one is removed once the jobs that read it have run
(rules/train.smk). Evaluation and margins run before the next iteration's sampling (their rules'
priority), so while a run goes on it holds its kept checkpoints plus at most two: the previous
iteration's, still read, and the one being written. Agent runs (IPR, mixtures) keep all of theirs.
Sampled text is counted at an upper bound of 8 bytes per generated token (the completion and the
program extracted from it, ~4 bytes of text per token each, before Parquet's compression).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envisions_flow.workflow.runs import is_agent_run, kept_iterations, method_of, run_settings

TEXT_BYTES_PER_TOKEN = 8


@dataclass
class RunDisk:
    """One run's disk: checkpoints left at the end, the most held at once, and its sampled text."""

    domain: str
    run: str
    checkpoints_at_end: int
    checkpoints_at_most: int
    checkpoint_bytes: int | None
    text_bytes: int

    def at_end(self) -> int | None:
        return None if self.checkpoint_bytes is None else self.checkpoints_at_end * self.checkpoint_bytes + self.text_bytes

    def at_most(self) -> int | None:
        return None if self.checkpoint_bytes is None else self.checkpoints_at_most * self.checkpoint_bytes + self.text_bytes


def parameter_count(config: dict[str, Any], results: Path | None) -> int | None:
    """Parameters of the base model, counted from its config on the meta device (no weights are read):
    the converted base model under results/, else the configured source when it is on this machine."""
    from transformers import AutoConfig

    from envisions_flow.workflow.models import ModelSpecError, resolve_source

    converted = results / "models" / "base" if results else None
    try:
        if converted is not None and (converted / "config.json").is_file():
            model_config = AutoConfig.from_pretrained(converted)
        else:
            location, gguf_file = resolve_source(config["model"])
            if not Path(location).exists():
                return None  # a hub id not downloaded yet
            model_config = AutoConfig.from_pretrained(location, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (ModelSpecError, OSError, ValueError):
        return None
    return _count(model_config)


def _count(model_config: Any) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return sum(parameter.numel() for parameter in model.parameters())  # tied weights once, as saved


def run_disk(config: dict[str, Any], domain: str, run: str, sampled_tokens: int,
             checkpoint_bytes: int | None) -> RunDisk:
    """The disk of one run given its sampled tokens (gpu_hours' upper bound) and the size of one checkpoint."""
    settings = run_settings(config, domain, run)
    iterations = int(settings["iterations"])
    if is_agent_run(config, run):  # agent runs keep every iteration's checkpoint, IPR its SFT agent too
        kept = iterations + (method_of(config, run) == "ipr")
        return RunDisk(domain, run, kept, kept, checkpoint_bytes, sampled_tokens * TEXT_BYTES_PER_TOKEN)
    kept = len(kept_iterations(settings))
    return RunDisk(domain, run, kept, min(iterations, kept + 2), checkpoint_bytes,
                   sampled_tokens * TEXT_BYTES_PER_TOKEN)


def gigabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e9:,.2f} GB"
