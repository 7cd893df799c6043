"""Logic executor throughput: ProofWriter-sized programs answered per second (issue goal: >= 1,000/s on 2 cores).

Run: .venv/bin/python benchmarks/logic_execution.py [--programs 10000] [--workers 2] [--repeat 3]
Prints one JSON line per repetition, then one with the medians.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from common import emit, median_line, peak_rss_mb

from envisions_flow.datasets.theories import ATTRIBUTES, _theory, theory_program
from envisions_flow.environments.base import Task
from envisions_flow.environments.logic import LogicEnvironment


def programs(count: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    out = []
    while len(out) < count:
        entities, facts, rules = _theory(r, max_depth=5)
        out.append(theory_program(facts, rules, (r.choice(ATTRIBUTES), (r.choice(entities),), True)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = programs(args.programs)
    tasks = [Task(str(i), "", "True") for i in range(len(texts))]
    environment = LogicEnvironment(workers=args.workers)
    lines = []
    for repetition in range(args.repeat):
        started = time.perf_counter()
        results = environment.execute(tasks, texts)
        elapsed = time.perf_counter() - started
        lines.append(emit({
            "benchmark": "logic_execution", "repetition": repetition, "programs": len(texts),
            "workers": args.workers, "seconds": round(elapsed, 2), "programs_per_s": round(len(texts) / elapsed, 1),
            "errors": sum(bool(r.error_class) and r.error_class != "wrong_answer" for r in results),
            "mean_lines": round(sum(t.count("\n") + 1 for t in texts) / len(texts), 1),
            "peak_rss_mb": peak_rss_mb(),
        }))
    median_line(lines, "programs_per_s", "seconds")

if __name__ == "__main__":
    main()
