"""Training the policy on what the run's strategy learns from, and Self-Rewarding's warm-up.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from envisions_flow.stages.common import training_report
from envisions_flow.stages.settings import TrainSettings, WarmupSettings, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.runs import training_plan

log = logging.getLogger("envisions_flow")


def warmup(config: dict[str, Any], run: str, base_model: str, out: str) -> None:
    """Self-Rewarding's warm-up: SFT of the base model on instruction data before the first iteration."""
    from envisions_flow.generation.base import render_chat
    from envisions_flow.methods.judging import load_warmup
    from envisions_flow.training.trainers import load_tokenizer
    from envisions_flow.training.trainers import train as run_training

    settings = settings_for(WarmupSettings, config, run)
    tokenizer = load_tokenizer(base_model)
    examples = [{"prompt": render_chat(tokenizer, [{"role": "user", "content": e["prompt"]}]),
                 "completion": e["completion"], "loss": "warmup"}
                for e in load_warmup(settings.self_rewarding.warmup)]
    metrics = run_training(base_model, examples, dict(settings.training), out, **training_report(run, "warmup", out))
    log.info("%s: warmed up on %d examples: %s", out, len(examples), metrics)


def train(config: dict[str, Any], run: str, iteration: int, init_model: str, u1_path: str, u2_path: str,
          out: str) -> None:
    """Train the run's initial model (the base model for ENVISIONS) on what its strategy learns from.

    When training wants several processes (GPUs, nodes: launch.py), this call starts them, each of
    which calls `train` again, and returns when they have finished.
    """
    from envisions_flow.training.examples import build_examples, build_pairs
    from envisions_flow.training.launch import launch
    from envisions_flow.training.trainers import load_tokenizer
    from envisions_flow.training.trainers import train as run_training

    settings = settings_for(TrainSettings, config, run)
    if launch("envisions_flow.stages.train:train", [config, run, iteration, init_model, u1_path, u2_path, out],
              dict(settings.training), Path(out).parent):
        return
    environment = settings.train_environment()
    tokenizer = load_tokenizer(init_model)
    u1, u2 = art.read_table(u1_path, art.U1), art.read_table(u2_path, art.U2)
    plan = training_plan(dataclasses.asdict(settings.strategy), iteration)
    examples = build_examples(u1 if plan["sft"] else u1.iloc[0:0], u2 if plan["l2"] else u2.iloc[0:0],
                              environment, tokenizer)
    pairs = build_pairs(u2, environment, tokenizer) if plan["dpo"] else []
    metrics = run_training(init_model, examples, dict(settings.training), out, pairs, dict(settings.dpo),
                           **training_report(run, f"iter{iteration}", out))
    log.info("%s: trained from %s on %d SFT examples and %d DPO pairs: %s", out, init_model, len(examples),
             len(pairs), metrics)
