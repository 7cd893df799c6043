"""The demo's last lines: its results (each default run's summary), the disk they take, and what to run next.

    .venv/bin/python -m envisions_flow.workflow.demo config/demo.yaml [config/demo-compare.yaml]
"""

from __future__ import annotations

import sys
from pathlib import Path

from envisions_flow.workflow.gpu_hours import load_config
from envisions_flow.workflow.runs import is_replicate, run_dir, runs_of


def disk_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def epilogue(configfiles: list[str], results: Path = Path("results")) -> str:
    """What `make demo` prints when the workflow is done."""
    config = load_config(["config/config.yaml", *configfiles])
    default_runs = config.get("default_runs")
    lines = []
    for domain in config.get("default_domains") or list(config["domains"]):
        for run in runs_of(config, domain):
            if (default_runs is not None and run not in default_runs) or is_replicate(config, run):
                continue
            summary = results / run_dir(domain, run) / "summary.md"
            if summary.is_file():
                lines += [f"== {summary} ==", summary.read_text().rstrip(), ""]
    compare = any(name.endswith("demo-compare.yaml") for name in configfiles)
    report = results / "report.html"
    lines += [
        f"Results: {results}/ ({disk_bytes(results) / 1e9:.2f} GB): per run summary.md, analysis.parquet and "
        "iter<i>/ (samples, pool, U1/U2, eval.json with eval.parquet: every test prediction)",
        f"Time per stage: .venv/bin/python -m envisions_flow.workflow.logs {results}/logs",
        (f"Report: {report} (tables and figures in {results}/report/)" if compare and report.is_file() else
         f"Report: make report -> {results}/report.html (the paper's tables and figures for these runs)"),
        ("Next: README.md, 'Running it yourself'; docs/slurm.md on a Slurm cluster" if compare else
         "Next: make demo-compare (ENVISIONS beside STaR, SFT+DPO and w/o L2, 3 seeds each: hours on 2 cores); "
         "make test; README.md, 'Running it yourself'"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    print(epilogue(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
