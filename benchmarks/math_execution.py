"""Math executor throughput: PAL programs run in the sandbox per second (issue goal: >= 1,000/s on 2 cores).

The programs look like a policy's: correct and wrong `solution()` functions over the project's generated
word problems, programs that raise, programs with syntax errors, and (`--loop-share`) programs that loop
until the timeout. Every program runs confined as in the workflow (forked from a warm worker, rlimits,
audit hook, own directory, and the kernel layers). Timeouts are not the executor's speed: the rate is the
programs that finished divided by the wall time less the worker-seconds spent waiting on timeouts.

The same workload runs under several sandboxes side by side, interleaved in each repetition (in a
rotating order) so that a busy machine disturbs them alike: every kernel layer (`all`, the workflow's), none of them (`none`: the
audit hook and rlimits only), and each layer alone. The last line gives all/none and what each layer
costs per program: of CPU (this process, its workers and their children) and of wall time per worker.

Run: .venv/bin/python benchmarks/math_execution.py [--programs 5000] [--workers 2] [--repeat 3]
Prints one JSON line per sandbox and repetition, one with the medians per sandbox, then the comparison.
"""

from __future__ import annotations

import argparse
import random
import re
import time

from common import cpu_seconds, emit, median_line, peak_rss_mb

from envisions_flow.datasets.word_problems import generate_word_problems
from envisions_flow.environments.confinement import KERNEL_LAYERS
from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.environments.sandbox import BEST_EFFORT, Confinement, Limits

# sandbox name -> the kernel layers it applies (benchmark only: a run always applies them all)
SANDBOXES = {"all": KERNEL_LAYERS, "none": (), **{layer: (layer,) for layer in KERNEL_LAYERS}}

CRASHING = [
    "def solution():\n    items = [1, 2, 3]\n    return items[7]",
    "def solution():\n    total = 10\n    return total / 0",
    "def solution():\n    return undefined_name * 2",
    "def solution():\n    return int('twelve')",
]
BROKEN = ["def solution(:\n    return 1", "def solution():\nreturn 3", "solution = lambda: )"]
LOOPING = "def solution():\n    count = 0\n    while True:\n        count += 1\n    return count"


def pal_program(question: str, answer: int) -> str:
    """A PAL-style program that names the question's numbers and returns the answer."""
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    lines = [f"    quantity_{i} = {n}" for i, n in enumerate(numbers)]
    first = "quantity_0" if numbers else "0"
    lines.append(f"    result = {first} + ({answer} - {first})")
    return "def solution():\n" + "\n".join(lines) + "\n    return result"


def workload(count: int, loop_share: float, seed: int = 0) -> tuple[list[Task], list[str]]:
    """`count` tasks and programs: 60% correct, 20% wrong, 10% raising, 10% - loop share unparsable."""
    rng = random.Random(seed)
    problems = generate_word_problems({"n": count, "split": "train", "difficulty": "medium", "seed": seed}, "bench")
    tasks, programs = [], []
    for index, row in enumerate(problems.itertuples()):
        correct = pal_program(row.question, int(row.answer))
        draw = rng.random()
        if draw < loop_share:
            program = LOOPING
        elif draw < 0.6:
            program = correct
        elif draw < 0.8:
            program = correct.replace("return result", "return result + 1")
        elif draw < 0.9:
            program = rng.choice(CRASHING)
        else:
            program = rng.choice(BROKEN)
        tasks.append(Task(str(index), row.question, str(row.answer)))
        programs.append(program)
    return tasks, programs


def measure(environment: MathEnvironment, tasks: list[Task], programs: list[str], args: argparse.Namespace,
            sandbox: str, repetition: int) -> dict:
    started, cpu_before = time.perf_counter(), cpu_seconds()
    results = environment.execute(tasks, programs)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    timeouts = sum(result.error_class == "timeout" for result in results)
    busy = elapsed - timeouts * args.timeout / args.workers
    return emit({
        "benchmark": "math_execution", "sandbox": sandbox, "layers": list(SANDBOXES[sandbox]),
        "repetition": repetition, "programs": len(programs), "workers": args.workers, "seconds": round(elapsed, 2),
        "timeouts": timeouts, "programs_per_s_excluding_timeouts": round((len(programs) - timeouts) / busy, 1),
        "programs_per_s_overall": round(len(programs) / elapsed, 1),
        # CPU time of this process, its workers and their children, timeouts included: on a busy
        # machine this, not the wall time, says what the executor costs
        "cpu_ms_per_program": round(cpu / len(programs) * 1000, 3),
        "correct": sum(result.b for result in results),
        "error_classes": sorted({result.error_class for result in results}),
        "peak_rss_mb": peak_rss_mb(),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop-share", type=float, default=0.002, help="share of programs that loop forever")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sandboxes", nargs="+", choices=list(SANDBOXES), default=list(SANDBOXES))
    args = parser.parse_args()
    tasks, programs = workload(args.programs, args.loop_share)
    environments = {name: MathEnvironment(limits=Limits(timeout_s=args.timeout), workers=args.workers,
                                          confinement=Confinement(mode=BEST_EFFORT, layers=SANDBOXES[name]))
                    for name in args.sandboxes}
    lines: dict[str, list[dict]] = {name: [] for name in args.sandboxes}
    names = list(environments)
    for repetition in range(args.repeat):  # each repetition starts with another sandbox, so none is always first
        for name in names[repetition % len(names):] + names[:repetition % len(names)]:
            lines[name].append(measure(environments[name], tasks, programs, args, name, repetition))
    medians = {name: median_line(named, "programs_per_s_excluding_timeouts", "programs_per_s_overall",
                                 "cpu_ms_per_program", "seconds") for name, named in lines.items()}
    if {"all", "none"} <= set(medians):
        none = medians["none"]

        def cost(name: str) -> dict[str, float]:
            line = medians[name]
            wall = args.workers / line["median_programs_per_s_excluding_timeouts"] - args.workers / none[
                "median_programs_per_s_excluding_timeouts"]
            return {"cpu_us": round((line["median_cpu_ms_per_program"] - none["median_cpu_ms_per_program"]) * 1000, 1),
                    "wall_us_per_worker": round(wall * 1e6, 1)}

        emit({"benchmark": "math_execution", "comparison": "all kernel layers vs none",
              "throughput_ratio": round(medians["all"]["median_programs_per_s_excluding_timeouts"]
                                        / none["median_programs_per_s_excluding_timeouts"], 3),
              # with as many workers as cores the executor is CPU-bound: this is the ratio a machine
              # that runs nothing else sees, and the one a busy machine's wall time cannot show
              "cpu_throughput_ratio": round(
                  none["median_cpu_ms_per_program"] / medians["all"]["median_cpu_ms_per_program"], 3),
              "us_per_program": {name: cost(name) for name in medians if name != "none"}})


if __name__ == "__main__":
    main()
