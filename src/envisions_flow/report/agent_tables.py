"""The agent runs' tables (IPR's Tables 2 and 4, the mixture paper's Table 3), from every iteration's eval.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from envisions_flow.report.catalogue import MISSING, Entries
from envisions_flow.report.tables import Table, fmt, nan_mean, pct
from envisions_flow.workflow.config import domain_settings
from envisions_flow.workflow.runs import run_settings


def _agent_evals(entries: Entries) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    evals: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for domain, run, iteration, path in entries:
        evals.setdefault((domain, run), {})[int(iteration)] = json.loads(Path(path).read_text())
    return evals


def _testset_cells(config: dict[str, Any], domain: str, report: dict[str, Any], key: str) -> dict[str, str]:
    """One cell per test set of the domain (metric `key` in %), and their mean."""
    names = list(domain_settings(config, domain)["testsets"])
    values = [pct(report["testsets"].get(name, {}).get(key)) for name in names]
    return {**{f"{domain}/{name}": fmt(value) for name, value in zip(names, values)}, "Average": fmt(nan_mean(values))}


def _no_runs(name: str, method: str) -> Table:
    return Table(name, pd.DataFrame(), [f"No {method} run is configured among the default runs (config runs, "
                                        f"method: {method}; default_runs)."])


def ipr_table2(config: dict[str, Any], entries: Entries) -> Table:
    """Each IPR run's SFT agent (iteration 0) and its best iteration, as the paper reports IPR."""
    evals = _agent_evals(entries)
    if not evals:
        return _no_runs("ipr_table2", "ipr")
    rows = []
    for (domain, run), by_iteration in evals.items():
        rows.append({"run": run, "agent": "SFT", **_testset_cells(config, domain, by_iteration[0],
                                                                  "average_final_reward")})
        trained = {i: report for i, report in by_iteration.items() if i > 0}
        if trained:
            best = max(trained, key=lambda i: (trained[i]["average_final_reward"], -i))
            rows.append({"run": run, "agent": f"IPR (iteration {best})",
                         **_testset_cells(config, domain, trained[best], "average_final_reward")})
    notes = ["Average final reward (%) over each test set's episodes, greedy, in step mode; IPR's row is its best "
             "iteration, as in the paper's Table 2. The paper's environments (WebShop, InterCodeSQL, ALFWorld) "
             "need servers this workflow does not ship, so its numbers are not set beside these."]
    return Table("ipr_table2", pd.DataFrame(rows), notes)


def ipr_table4(config: dict[str, Any], entries: Entries) -> Table:
    """Every iteration of each IPR run: average final reward and the Monte Carlo average step reward."""
    evals = _agent_evals(entries)
    if not evals:
        return _no_runs("ipr_table4", "ipr")
    rows = []
    for (domain, run), by_iteration in evals.items():
        for iteration, report in sorted(by_iteration.items()):
            step = report.get("average_step_reward")
            rows.append({"run": run, "training": "SFT" if iteration == 0 else f"Iteration={iteration}",
                         **_testset_cells(config, domain, report, "average_final_reward"),
                         "avg. step reward": fmt(pct(step)) if step is not None else MISSING})
    notes = ["Average final reward (%) per test set; 'avg. step reward' is the mean over test trajectories of "
             "their steps' Monte Carlo rewards under the SFT scorer (the paper's Fig. 4; '—' with "
             "ipr.eval_step_reward: false). Loss ablations (w/o o-DPO, s-DPO, SFT) are further ipr runs with "
             "ipr.losses."]
    return Table("ipr_table4", pd.DataFrame(rows), notes)


def _with_ci(report: dict[str, Any], key: str) -> str:
    value, interval = report.get(key), (report.get("ci") or {}).get(key)
    if value is None:
        return MISSING
    if not interval:
        return fmt(100 * value)
    return f"{100 * value:.2f} ± {100 * (interval[1] - interval[0]) / 2:.2f}"


def mixture_table3(config: dict[str, Any], entries: Entries) -> Table:
    """Trivial agent, base agent and each mixture run's fine-tuned agents per test set: the mixture paper's Table 3."""
    evals = _agent_evals(entries)
    if not evals:
        return _no_runs("mixture_table3", "mixture")
    metrics = {"functional correctness": "accuracy", "capability": "capability_score", "VERTEX_DTW": "vertex_dtw"}
    rows, seen_base, units = [], set(), {}
    for (domain, run), by_iteration in evals.items():
        letter = run_settings(config, domain, run)["mixture"]["mixture"].upper()
        for iteration, report in sorted(by_iteration.items()):
            for testset, entry in report["testsets"].items():
                units = entry.get("bootstrap_unit") or units
                cells = {label: _with_ci(entry, key) for label, key in metrics.items()}
                if iteration == 0:
                    if (domain, testset) in seen_base:  # every mixture run starts from the same base model
                        continue
                    seen_base.add((domain, testset))
                    trivial = entry.get("trivial") or {}
                    rows.append({"agent": "Trivial agent (does nothing)", "run": "", "test set": testset,
                                 **{label: _with_ci(trivial, key) if key in trivial else MISSING
                                    for label, key in metrics.items()}})
                    rows.append({"agent": "Base agent model (M)", "run": run, "test set": testset, **cells})
                    continue
                name = (f"Fine-tuned on mixture {letter} (M_{letter})" if iteration == 1
                        else f"{iteration}x fine-tuned on mixture {letter} (M^{iteration})")
                rows.append({"agent": name, "run": run, "test set": testset, **cells})
    notes = ["Metrics in % (VERTEX_DTW ×100) over each test set's episodes, greedy, in step mode; ± is half the "
             "width of the 95% bootstrap interval" + (" (resampling unit: " + ", ".join(
                 f"{k}: {v}" for k, v in units.items()) + ")" if units else "") + ". The base agent is the "
             "untrained model (few-shot); the trivial agent takes no action. The paper's WebArena numbers are "
             "not set beside these (its environment is not shipped)."]
    return Table("mixture_table3", pd.DataFrame(rows), notes)


AGENT_TABLE_BUILDERS = {"ipr_table2": ipr_table2, "ipr_table4": ipr_table4, "mixture_table3": mixture_table3}
