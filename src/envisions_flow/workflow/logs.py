"""Logging for rule scripts: one short line per artifact, to the rule's log file and the terminal.

Every job ends its log with the seconds it took (since its process started, so imports and model
loading count) and the CPU seconds it used (its children's included: sandbox workers, torchrun), which
`python -m envisions_flow.workflow.logs results/logs` sums per rule: where a run's time went.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

FINISHED = re.compile(r"rule (?P<rule>\S+) finished in (?P<wall>[0-9.]+) s, (?P<cpu>[0-9.]+) s of CPU")


def _process_seconds() -> float:
    """Seconds since this process started (/proc), or since the module was imported elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


MAX_THREADS = "ENVISIONS_MAX_THREADS"


def job_threads(rule_threads: int) -> int:
    """The rule's threads, at most `ENVISIONS_MAX_THREADS` when that is set to a positive number."""
    cap = os.environ.get(MAX_THREADS, "").strip()
    return max(1, min(rule_threads, int(cap))) if cap.isdigit() and int(cap) > 0 else max(1, rule_threads)


@contextmanager
def rule_job(snakemake: Any) -> Iterator[None]:
    """Set up logging and thread counts for a Snakemake `script:` job; log any failure with its traceback,
    and on success the job's wall and CPU seconds.

    Torch gets the rule's threads (Snakemake exports them as `OMP_NUM_THREADS`), or fewer where
    `ENVISIONS_MAX_THREADS` caps them: two 2-thread torch processes on 2 cores each run 6x slower (their
    OpenMP threads spin while they wait), so whoever shares the cores between several Snakemake runs (the
    test suite's workers) sets it. Torch is not imported for this: a job that never uses it starts without it."""
    threads = str(job_threads(int(getattr(snakemake, "threads", 1))))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=handlers, force=True)
    # a torch imported from here on reads the variables above; importing it here would cost every job that
    # never uses it (selection, pools, summaries, the data) 1.4 s of CPU
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    rule = getattr(snakemake, "rule", "?")
    try:
        yield
    except Exception:
        logging.getLogger("envisions_flow").exception("rule %s failed", rule)
        raise
    used = os.times()
    logging.getLogger("envisions_flow").info("rule %s finished in %.1f s, %.1f s of CPU", rule, _process_seconds(),
                                             used.user + used.system + used.children_user + used.children_system)


def stage_times(log_dir: str | Path) -> dict[str, dict[str, float]]:
    """{rule: {"jobs", "wall_s", "cpu_s"}} summed over the rule logs under `log_dir` of jobs that finished."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for path in sorted(Path(log_dir).rglob("*.log")):
        for match in FINISHED.finditer(path.read_text(errors="replace")):
            entry = totals[match["rule"]]
            entry["jobs"] += 1
            entry["wall_s"] += float(match["wall"])
            entry["cpu_s"] += float(match["cpu"])
    return dict(totals)


def main(argv: list[str] | None = None) -> int:
    """Print where a run's time went, per rule, from its logs (default results/logs)."""
    from tabulate import tabulate

    log_dir = (argv if argv is not None else sys.argv[1:]) or ["results/logs"]
    totals = stage_times(log_dir[0])
    rows = sorted(totals.items(), key=lambda item: -item[1]["wall_s"])
    table = [[rule, int(entry["jobs"]), f"{entry['wall_s']:.0f}", f"{entry['cpu_s']:.0f}"] for rule, entry in rows]
    table.append(["total", sum(int(e["jobs"]) for e in totals.values()),
                  f"{sum(e['wall_s'] for e in totals.values()):.0f}", f"{sum(e['cpu_s'] for e in totals.values()):.0f}"])
    print(tabulate(table, headers=["rule", "jobs", "wall s", "CPU s"], tablefmt="github", disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
