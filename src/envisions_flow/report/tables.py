"""Reporting: the paper's tables and figures rebuilt from the configured runs, beside the published numbers.

Every table reads the LAST iteration's `eval.json` of the runs it compares (few-shot:
iteration 0); the figures read the runs' `analysis.parquet`. `report_runs` says which
(domain, run) pairs a table or figure needs, so the workflow's report rules ask for
exactly those files. Accuracies are shown in percent; a cell whose run or test set was
not configured is "—", never 0. Where a test set's name matches one of the paper's
(`gsm8k`, `math`, `gsm_hard`, `svamp`, `asdiv`, `proofwriter`, `ruletaker`, `miniwob`),
the paper's number for `report.paper_model` and the difference (ours − paper) are set
beside the run's own (`report/paper_numbers.yaml`, transcribed from arXiv 2406.11736).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from envisions_flow.report.catalogue import (
    MISSING,
    REPORT_ITEMS,
    Entries,
    paper_note,
    paper_numbers,
    paper_rows,
    report_domains,
)
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.config import dataset_spec, domain_settings
from envisions_flow.workflow.runs import DEFAULT_RUN, method_of, run_settings, runs_of


def _load_evals(entries: Entries) -> dict[tuple[str, str], dict[str, Any]]:
    return {(domain, run): json.loads(Path(path).read_text()) for domain, run, path in entries}


def _columns(config: dict[str, Any], domains: Iterable[str]) -> list[tuple[str, str, str]]:
    """(domain, test set, column label) per configured test set; the label is the test set's name,
    prefixed with its domain where two domains use the same name."""
    pairs = [(domain, name) for domain in domains for name in domain_settings(config, domain)["testsets"]]
    names = [name for _, name in pairs]
    return [(domain, name, name if names.count(name) == 1 else f"{domain}/{name}") for domain, name in pairs]


def _paper_column(domain: str, name: str) -> str | None:
    spec = paper_numbers()["testsets"].get(name)
    return name if spec and spec["domain"] == domain else None


def _held_out(config: dict[str, Any], domain: str, name: str) -> bool:
    return not dataset_spec(config, domain, name).get("held_in", True)


def _pct(value: float | None) -> float:
    return math.nan if value is None else 100.0 * float(value)


def _mean(values: Iterable[float]) -> float:
    values = [value for value in values if not math.isnan(value)]
    return sum(values) / len(values) if values else math.nan


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, str):
        return value
    return f"{value:+.2f}" if signed else f"{value:.2f}"


class Table:
    """A rendered table: display cells (strings), a title and notes, written as Markdown, CSV and LaTeX."""

    def __init__(self, name: str, frame: pd.DataFrame, notes: Sequence[str] = ()):
        self.name, self.notes = name, list(notes)
        # a table with nothing to show says why in every format
        self.frame = frame if len(frame.columns) else pd.DataFrame({"note": self.notes})

    @property
    def title(self) -> str:
        return REPORT_ITEMS[self.name].title if self.name in REPORT_ITEMS else self.name

    def markdown(self) -> str:
        body = self.frame.to_markdown(index=False, stralign="right", disable_numparse=True)
        notes = "" if list(self.frame.columns) == ["note"] else "".join(f"\n- {note}" for note in self.notes)
        return f"## {self.title}\n\n{body}\n{notes}\n"

    def write(self, md: str | Path, csv: str | Path, tex: str | Path) -> None:
        art.write_text(self.markdown(), md)
        art.write_text(self.frame.to_csv(index=False), csv)
        latex = self.frame.to_latex(index=False, escape=True, caption=self.title, label=f"tab:{self.name}")
        art.write_text(latex, tex)


def _accuracy_rows(config: dict[str, Any], evals: dict[tuple[str, str], dict[str, Any]],
                   columns: list[tuple[str, str, str]], runs: list[str], paper_table: str | None,
                   paper_key: Any = None, labels: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Rows run × test set (accuracy %, Avg. = mean of the row's cells), each followed by the paper's row and Δ."""
    paper = paper_rows(config, paper_table) if paper_table else {}
    paper_columns = [_paper_column(domain, name) for domain, name, _ in columns]
    full_match = sorted(filter(None, paper_columns)) == sorted(paper_numbers()["testsets"]) and all(paper_columns)
    held = ["held-out" if _held_out(config, domain, name) else "held-in" for domain, name, _ in columns]
    rows = [{"run": "held-out?", "method": "",
             **{label: ("✓" if mark == "held-out" else "✗") for (_, _, label), mark in zip(columns, held)},
             "Avg.": ""}]
    for run in runs:
        values = [_pct(evals[(domain, run)]["testsets"].get(name, {}).get("accuracy"))
                  if (domain, run) in evals else math.nan for domain, name, _ in columns]
        average = _mean(values)
        method = method_of(config, run)
        rows.append({"run": (labels or {}).get(run, run), "method": method,
                     **{label: _fmt(value) for (_, _, label), value in zip(columns, values)},
                     "Avg.": _fmt(average)})
        key = paper_key(run) if callable(paper_key) else (run if run in paper else method)
        published = paper.get(key) if any(paper_columns) else None
        if not published:
            continue
        theirs = [published.get(column) if column else None for column in paper_columns]
        rows.append({"run": f"{(labels or {}).get(run, run)} · paper", "method": method,
                     **{label: _fmt(value) for (_, _, label), value in zip(columns, theirs)},
                     "Avg.": _fmt(published.get("avg"))})
        diffs = [ours - their if their is not None and not math.isnan(ours) else None
                 for ours, their in zip(values, theirs)]
        avg_diff = average - published["avg"] if full_match and published.get("avg") is not None else None
        rows.append({"run": f"{(labels or {}).get(run, run)} · Δ", "method": method,
                     **{label: _fmt(value, signed=True) for (_, _, label), value in zip(columns, diffs)},
                     "Avg.": _fmt(avg_diff, signed=True)})
    notes = ["Accuracy in % at each run's last iteration; Avg. is the mean over the row's test sets; "
             "'held-out?' ✓ marks test sets configured with held_in: false; '—' = not configured or not reported."]
    if paper_table and not any(paper_columns):
        notes.append("No test set is named like one of the paper's (" + ", ".join(paper_numbers()["testsets"])
                     + "), so its published numbers are not shown beside these.")
    elif paper_table:
        notes.append(paper_note(config, paper_table))
        if not full_match:
            notes.append("Δ Avg. is left out: the configured test sets are not the paper's eight.")
    return pd.DataFrame(rows), notes


def _run_names(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return list(dict.fromkeys(run for _, run in pairs))


def table2(config: dict[str, Any], entries: Entries) -> Table:
    """Methods × the test sets of all domains, held-out marks, Avg.; the paper's Table 2 beside."""
    evals = _load_evals(entries)
    columns = _columns(config, report_domains(config))
    frame, notes = _accuracy_rows(config, evals, columns, _run_names(evals), "table2")
    return Table("table2", frame, notes)


def table3(config: dict[str, Any], entries: Entries) -> Table:
    """ENVISIONS and its ablations (no_refine, no_self_reward, no_pool, no_l2)."""
    evals = _load_evals(entries)
    runs = _run_names(evals)
    frame, notes = _accuracy_rows(config, evals, _columns(config, report_domains(config)), runs, "table3")
    if runs == [DEFAULT_RUN]:
        notes.append("No ablation runs (methods no_refine, no_self_reward, no_pool, no_l2) were configured.")
    return Table("table3", frame, notes)


def _ks_of(config: dict[str, Any], run: str) -> list[int]:
    """The K a run samples with in each domain the report covers (one value unless domains differ)."""
    return sorted({int(run_settings(config, domain, run)["explore"]["k"]) for domain in report_domains(config)
                   if run in runs_of(config, domain)})


def _k_of(config: dict[str, Any], run: str) -> int | None:
    ks = _ks_of(config, run)
    return ks[0] if len(ks) == 1 else None


def table5(config: dict[str, Any], entries: Entries) -> Table:
    """ENVISIONS at its own K and the runs that override explore.k, sorted by K."""
    evals = _load_evals(entries)
    runs = sorted(_run_names(evals), key=lambda run: (_k_of(config, run) or 0, run))
    labels = {run: f"K={'/'.join(map(str, _ks_of(config, run)))} ({run})" for run in runs}
    frame, notes = _accuracy_rows(config, evals, _columns(config, report_domains(config)), runs, "table5",
                                  paper_key=lambda run: _k_of(config, run), labels=labels)
    if len(runs) == 1:
        notes.append("No runs overriding explore.k were configured.")
    return Table("table5", frame, notes)


def table8(config: dict[str, Any], entries: Entries) -> Table:
    """Accuracy with and without one greedy self-refine pass, for the runs with eval.self_refine."""
    evals = _load_evals(entries)
    if not evals:
        return Table("table8", pd.DataFrame(), ["No run has eval.self_refine: true, so there is nothing to show."])
    domains = [domain for domain in report_domains(config) if any(d == domain for d, _ in evals)]
    columns = _columns(config, domains)
    paper = paper_rows(config, "table8")
    rows = []
    for run in _run_names(evals):
        method = method_of(config, run)
        for part, key, suffix in (("plain", "accuracy", ""), ("self_refined", "accuracy_self_refined",
                                                                " + self-refine")):
            values = [_pct(evals[(domain, run)]["testsets"].get(name, {}).get(key))
                      if (domain, run) in evals else math.nan for domain, name, _ in columns]
            rows.append({"run": run + suffix, "method": method,
                         **{label: _fmt(value) for (_, _, label), value in zip(columns, values)},
                         "Avg.": _fmt(_mean(values))})
            published = (paper.get(run) or paper.get(method) or {}).get(part)
            if published:
                theirs = [published.get(name) if _paper_column(domain, name) else None for domain, name, _ in columns]
                rows.append({"run": f"{run}{suffix} · paper", "method": method,
                             **{label: _fmt(value) for (_, _, label), value in zip(columns, theirs)}, "Avg.": MISSING})
                rows.append({"run": f"{run}{suffix} · Δ", "method": method,
                             **{label: _fmt(ours - their if their is not None and not math.isnan(ours) else None,
                                            signed=True)
                                for (_, _, label), ours, their in zip(columns, values, theirs)}, "Avg.": MISSING})
    notes = ["Accuracy in % at each run's last iteration, before and after one greedy refine pass on every "
             "prediction (eval.self_refine); only domains where a run refines at test time are shown.",
             paper_note(config, "table8")]
    return Table("table8", pd.DataFrame(rows), notes)


def table9(config: dict[str, Any], entries: Entries) -> Table:
    """Per-domain average of continual-training runs (strategy.init: previous) against ENVISIONS."""
    evals = _load_evals(entries)
    runs = _run_names(evals)
    continual = [run for run in runs if run != DEFAULT_RUN]
    domains = report_domains(config)
    paper = paper_rows(config, "table9")

    def score(run: str, domain: str | None) -> float:
        if domain is None:  # over all the run's test sets, as Table 2's Avg.
            return _mean([_pct(entry["accuracy"]) for (d, r), result in evals.items() if r == run
                          for entry in result["testsets"].values()])
        result = evals.get((domain, run))
        return _pct(result["average"]) if result else math.nan

    rows = []
    for domain in [*domains, None]:
        key = domain or "average"
        row: dict[str, str] = {"domain": key}
        for run in continual:
            row[run] = _fmt(score(run, domain))
        row[DEFAULT_RUN] = _fmt(score(DEFAULT_RUN, domain))
        for run in continual:
            row[f"Δ ({DEFAULT_RUN} − {run})"] = _fmt(score(DEFAULT_RUN, domain) - score(run, domain), signed=True)
        published = paper.get(key)
        if published:
            row["continual · paper"] = _fmt(published["continual"])
            row[f"{DEFAULT_RUN} · paper"] = _fmt(published["envisions"])
            for run in continual:
                row[f"{run} − paper"] = _fmt(score(run, domain) - published["continual"], signed=True)
            row[f"{DEFAULT_RUN} − paper"] = _fmt(score(DEFAULT_RUN, domain) - published["envisions"], signed=True)
        rows.append(row)
    notes = ["Accuracy in % at each run's last iteration: a domain's row is the mean over its test sets, "
             "'average' the mean over all test sets of the run.", paper_note(config, "table9")]
    if not continual:
        notes.append("No continual-training runs (method envisions with strategy.init: previous) were configured.")
    return Table("table9", pd.DataFrame(rows).fillna(MISSING), notes)


def table11(config: dict[str, Any], entries: Entries) -> Table:
    """Success per task family (paper Table 11: MiniWob++), from eval.json's testsets.<name>.per_task: the
    breakdown an environment reports for its test sets (the web's, by MiniWob task)."""
    evals = _load_evals(entries)
    if not evals:
        return Table("table11", pd.DataFrame(), ["No run of a domain whose environment reports success per task "
                                                 "(the web's) was configured."])
    domains = {domain for domain, _ in evals}
    series: dict[str, dict[str, float]] = {}
    for (domain, run), result in evals.items():
        names = list(domain_settings(config, domain)["testsets"])
        for name in names:
            per_task = (result["testsets"].get(name) or {}).get("per_task")
            if per_task is not None:
                label = "/".join([*([domain] if len(domains) > 1 else []), run, *([name] if len(names) > 1 else [])])
                series[label] = {task: _pct(entry["success"]) for task, entry in per_task.items()}
    if not series:
        return Table("table11", pd.DataFrame(),
                     ["The runs' eval.json files have no per-task breakdown (testsets.<name>.per_task)."])
    tasks = sorted({task for values in series.values() for task in values})
    rows = [{"task": task, **{column: _fmt(values.get(task, math.nan)) for column, values in series.items()}}
            for task in tasks]
    rows.append({"task": "average", **{column: _fmt(_mean(values.values())) for column, values in series.items()}})
    notes = ["Success rate in % per task (MiniWob++: per task of the benchmark) at each run's last iteration; "
             "'average' is the mean over tasks."]
    return Table("table11", pd.DataFrame(rows), notes)


def _agent_evals(entries: Entries) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    evals: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for domain, run, iteration, path in entries:
        evals.setdefault((domain, run), {})[int(iteration)] = json.loads(Path(path).read_text())
    return evals


def _testset_cells(config: dict[str, Any], domain: str, report: dict[str, Any], key: str) -> dict[str, str]:
    """One cell per test set of the domain (metric `key` in %), and their mean."""
    names = list(domain_settings(config, domain)["testsets"])
    values = [_pct(report["testsets"].get(name, {}).get(key)) for name in names]
    return {**{f"{domain}/{name}": _fmt(value) for name, value in zip(names, values)}, "Average": _fmt(_mean(values))}


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
                         "avg. step reward": _fmt(_pct(step)) if step is not None else MISSING})
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
        return _fmt(100 * value)
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


TABLE_BUILDERS = {"table2": table2, "table3": table3, "table5": table5, "table8": table8, "table9": table9,
                  "table11": table11, "ipr_table2": ipr_table2, "ipr_table4": ipr_table4,
                  "mixture_table3": mixture_table3}


def write_table(config: dict[str, Any], name: str, entries: Entries, md: str, csv: str, tex: str) -> Table:
    table = TABLE_BUILDERS[name](config, entries)
    table.write(md, csv, tex)
    return table
