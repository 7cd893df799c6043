"""A stand-in for an execution job, run as its own process by tests/test_sandbox_attacks.py.

Its environment holds a canary secret from its very start (so it is in /proc/<pid>/environ, as a
job's API keys are), it judges programs exactly as the math environment does, and it prints one
JSON line: per program [b, error class, error, value].

`--hook off` runs each program in a child forked from this process with the audit hook replaced by
nothing, as if a program had switched it off: what still holds then is the kernel's doing.
"""

from __future__ import annotations

import json
import sys

from envisions_flow.environments import audit_hook, math_answers as answers
from envisions_flow.environments.sandbox import Limits, SandboxPool, run_program

LIMITS = Limits(timeout_s=3.0, memory_mb=512)


def judge(outcome, answer: str) -> list:
    """b as MathEnvironment.execute gives it, with the outcome's error class, error and value."""
    right = not outcome.error_class and outcome.value is not None and answers.numeric_verdict(
        outcome.value, outcome.kind, answer)
    return [int(right), outcome.error_class, outcome.error, outcome.value]


def main() -> None:
    request = json.loads(sys.stdin.read())
    batches = request["batches"]  # each a list of [code, gold answer]
    results = []
    if request["hook"] == "off":
        audit_hook.install = lambda *arguments: None
        for batch in batches:
            results.append([judge(run_program(code, limits=LIMITS), answer) for code, answer in batch])
    else:
        with SandboxPool(1, LIMITS) as pool:  # one worker: every program runs after the one before it
            for batch in batches:
                outcomes = list(pool.map([(code, "solution()") for code, _ in batch]))
                results.append([judge(outcome, answer) for outcome, (_, answer) in zip(outcomes, batch)])
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
