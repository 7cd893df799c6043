"""Sampling throughput of the transformers backend against the machine's limit (issue goal: >= 50% of it).

K samples for each of 64 math prompts at temperature 1 with log-probs recorded, exactly as the explore rule
samples: the zero-shot prompt of iterations 2 and later by default, `--few-shot` for iteration 1's prompt
(~520 tokens of worked examples; encoding it once per prompt then costs about as much as the K samples). Generated tokens per second are compared
with the limit the machine's measured fp32 matmul speed allows: 2 x parameters FLOPs per token.

Run: .venv/bin/python benchmarks/sampling.py [--prompts 64] [--k 5] [--max-new-tokens 256] [--batch-size auto]
     [--few-shot] [--repeat 3]
Prints one JSON line per repetition, then one with the medians.
"""

from __future__ import annotations

import argparse
import time

from common import embedded_model_dir, emit, matmul_flops, median_line, peak_rss_mb

from envisions_flow.datasets.word_problems import generate_word_problems
from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.generation.transformers_backend import TransformersBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=lambda value: value if value == "auto" else int(value), default="auto",
                        help="sequences per batch (generation.batch_size); the default, auto, is the workflow's: "
                             "every sequence that fits (all 64 x 5 here)")
    parser.add_argument("--few-shot", action="store_true", help="iteration 1's prompt with worked examples")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    backend = TransformersBackend(embedded_model_dir(), batch_size=args.batch_size, progress=False)
    parameters = sum(p.numel() for p in backend.model.parameters())
    environment = MathEnvironment()
    problems = generate_word_problems({"n": args.prompts, "split": "train", "difficulty": "medium", "seed": 0},
                                      "bench")
    prompts = [backend.render(environment.explore_prompt(Task(row.id, row.question, row.answer),
                                                         few_shot=args.few_shot)) for row in problems.itertuples()]
    lengths = [len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    prompt_tokens = sum(lengths)
    rows = backend.prompts_per_batch(lengths, args.k, args.max_new_tokens) * args.k  # what "auto" chose
    lines = []
    for repetition in range(args.repeat):
        limit = matmul_flops() / (2 * parameters)  # measured in each repetition: the machine's load changes
        started = time.perf_counter()
        samples = backend.sample(prompts, args.k, args.max_new_tokens, seed=repetition)
        elapsed = time.perf_counter() - started
        generated = sum(g.n_tokens for group in samples for g in group)
        lines.append(emit({
            "benchmark": "sampling", "repetition": repetition, "prompts": len(prompts), "k": args.k,
            "batch_size": args.batch_size, "batch_rows": rows, "few_shot": args.few_shot,
            "max_new_tokens": args.max_new_tokens,
            "parameters": parameters,
            "mean_prompt_tokens": round(prompt_tokens / len(prompts), 1), "generated_tokens": generated,
            "seconds": round(elapsed, 2), "tokens_per_s": round(generated / elapsed, 1),
            "limit_tokens_per_s": round(limit, 1), "share_of_limit": round(generated / elapsed / limit, 3),
            "peak_rss_mb": peak_rss_mb(),
        }))
    median_line(lines, "tokens_per_s", "limit_tokens_per_s", "share_of_limit", "seconds")


if __name__ == "__main__":
    main()
