"""Training throughput of the project's SFT trainer against a bare loop on the same batches (goal: >= 80%).

U1 (zero-shot prompt -> correct PAL program) and U2 (refine prompt with a wrong program -> the correct one)
examples over generated word problems are trained with `training.make_trainer` (TRL's SFTTrainer, prompt
masked, length-grouped batches), one epoch. The bare loop runs forward, backward and an AdamW step on the
very batches the trainer's data loader yields, with no trainer around it. Tokens are the non-padding tokens
the model reads; the completion tokens (those with a loss) are printed too.

Run: .venv/bin/python benchmarks/training.py [--examples 128] [--batch-size 8] [--repeat 3]
Prints one JSON line per repetition, then one with the medians.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import embedded_model_dir, emit, median_line, peak_rss_mb
from math_execution import pal_program

from envisions_flow.datasets.word_problems import generate_word_problems
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.training.examples import build_examples
from envisions_flow.training.trainers import make_trainer


def selections(count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """U1 and U2 as the select rule writes them, half the examples each."""
    problems = generate_word_problems({"n": count, "split": "train", "difficulty": "medium", "seed": 0}, "bench")
    rows = [{"id": row.id, "question": row.question, "positive": pal_program(row.question, int(row.answer)),
             "negative": pal_program(row.question, int(row.answer) + 1)} for row in problems.itertuples()]
    half = len(rows) // 2
    return pd.DataFrame(rows[:half]), pd.DataFrame(rows[half:])


def bare_loop(model_dir: Path, batches: list[dict], learning_rate: float) -> float:
    """Seconds for forward + backward + AdamW step over `batches`, nothing else."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    started = time.perf_counter()
    for batch in batches:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model_dir = embedded_model_dir()
    settings = {"epochs": 1, "learning_rate": 2e-5, "lr_scheduler": "linear", "warmup_ratio": 0.03,
                "weight_decay": 0.0, "per_device_batch_size": args.batch_size,
                "effective_batch_size": args.batch_size, "max_length": 1024, "seed": 0}
    u1, u2 = selections(args.examples)
    lines = []
    for repetition in range(args.repeat):
        with tempfile.TemporaryDirectory() as scratch:
            trainer = make_trainer(model_dir, build_examples(u1, u2, MathEnvironment(), _tokenizer(model_dir)),
                                   settings, Path(scratch) / "trainer")
            batches = list(trainer.get_train_dataloader())
            tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
            completion_tokens = sum(int((batch["labels"] != -100).sum()) for batch in batches)
            padded = sum(batch["input_ids"].numel() for batch in batches)
            started = time.perf_counter()
            trainer.train()
            trainer_seconds = time.perf_counter() - started
        bare_seconds = bare_loop(model_dir, batches, settings["learning_rate"])
        lines.append(emit({
            "benchmark": "training", "repetition": repetition, "examples": len(u1) + len(u2),
            "batch_size": args.batch_size, "batches": len(batches), "tokens": tokens,
            "completion_tokens": completion_tokens, "padding_share": round(1 - tokens / padded, 3),
            "trainer_seconds": round(trainer_seconds, 2), "bare_seconds": round(bare_seconds, 2),
            "trainer_tokens_per_s": round(tokens / trainer_seconds, 1),
            "bare_tokens_per_s": round(tokens / bare_seconds, 1),
            "trainer_share_of_bare": round(bare_seconds / trainer_seconds, 3),
            "peak_rss_mb": peak_rss_mb(),
        }))
    median_line(lines, "trainer_tokens_per_s", "bare_tokens_per_s", "trainer_share_of_bare", "padding_share")


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


if __name__ == "__main__":
    main()
