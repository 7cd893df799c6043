"""The workflow's own bookkeeping: DAG build of the paper config and a no-op re-run (goal: each under 10 s).

1. `snakemake -n` over every target of config/config.yaml (3 domains, all configured runs, 10 iterations),
   in an empty scratch directory, so the whole DAG (thousands of jobs) is built and printed, nothing run.
2. A no-op re-run: plain `snakemake --profile profiles/local --configfile config/demo.yaml` in the project,
   after the demo finished (`make demo`). The benchmark first asks `-n` whether anything would run and stops
   with the job count if so: a re-run that does work is not a no-op.

Run: .venv/bin/python benchmarks/workflow_overhead.py [--repeat 3] [--skip-rerun]
Prints one JSON line per measurement, then one with the medians.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_seconds, emit, median_line, peak_rss_mb

PROJECT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def timed(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (on a busy machine the CPU time says more) and the output of a command."""
    started, cpu_before = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed, cpu, done.stdout + done.stderr


def jobs_in(output: str) -> int:
    """The job count of a dry run's summary table ('total  N')."""
    found = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return int(found.group(1)) if found else 0


def scratch_copy() -> Path:
    """The workflow's files without results/: the paper DAG from nothing, as on a fresh cluster checkout."""
    scratch = Path(tempfile.mkdtemp(prefix="envisions-dag-"))
    for name in ("Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"):
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, scratch / name)
        elif source.exists():
            shutil.copy2(source, scratch / name)
    return scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-rerun", action="store_true", help="only the paper DAG (no finished demo needed)")
    args = parser.parse_args()
    scratch = scratch_copy()
    try:
        lines = []
        for repetition in range(args.repeat):
            seconds, cpu, output = timed([*SNAKEMAKE, "-n", "--quiet", "rules", "--configfile", "config/config.yaml"],
                                    scratch)
            lines.append(emit({"benchmark": "paper_dag_dry_run", "repetition": repetition,
                               "jobs": jobs_in(output), "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                               "peak_rss_mb_of_snakemake": peak_rss_mb(children=True)}))
        median_line(lines, "seconds", "cpu_seconds")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.skip_rerun:
        return
    demo = [*SNAKEMAKE, "--profile", "profiles/local", "--configfile", "config/demo.yaml"]
    _, _, output = timed([*demo, "-n", "--quiet", "rules"], PROJECT)
    if jobs_in(output):
        sys.exit(f"the demo has {jobs_in(output)} jobs left to run: finish it (`make demo`) before timing a no-op re-run")
    lines = []
    for repetition in range(args.repeat):
        seconds, cpu, output = timed(demo, PROJECT)
        lines.append(emit({"benchmark": "demo_noop_rerun", "repetition": repetition, "seconds": round(seconds, 2),
                           "cpu_seconds": round(cpu, 2),
                           "nothing_to_do": "Nothing to be done" in output}))
    median_line(lines, "seconds", "cpu_seconds")


if __name__ == "__main__":
    main()
