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

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from envisions_flow.report import intervals
from envisions_flow.report.accuracy import Estimate, RunAccuracy, average_of, load_runs, paired_difference
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


def pct(value: float | None) -> float:
    return math.nan if value is None else 100.0 * float(value)


def nan_mean(values: Iterable[float]) -> float:
    values = [value for value in values if not math.isnan(value)]
    return sum(values) / len(values) if values else math.nan


def fmt(value: Any, signed: bool = False) -> str:
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


Runs = dict[tuple[str, str], RunAccuracy]

INTERVAL_NOTE = ("Each accuracy is shown with its 95% interval [low, high]: Wilson's over the test items for one test "
                 "set, a bootstrap over items (resampled within each test set) for an average; a run replicated over "
                 "seeds (replicates) shows the mean of its replicates ± the half-width of the 95% t interval across "
                 "them.")

PAIRED_NOTE = (f"Δ vs {DEFAULT_RUN}: the row's Avg. minus {DEFAULT_RUN}'s on the same test items, in points, with its 95% "
               "paired bootstrap interval (items resampled alike for both runs, and replicates where there are "
               "several); p: McNemar's exact test on the items one run answers right and the other wrong (runs "
               "evaluated once). An interval that holds 0 is a difference the test sets cannot tell from noise.")


def _row_average(runs: Runs, columns: list[tuple[str, str, str]], run: str, key: str = "accuracy") -> Estimate:
    """The mean over a row's cells (every configured test set the run has, across domains) with its interval."""
    parts = [runs[(domain, run)].outcomes([name for d, name, _ in columns if d == domain], key)
             for domain in dict.fromkeys(domain for domain, _, _ in columns) if (domain, run) in runs]
    return average_of(parts)


def _difference(runs: Runs, columns: list[tuple[str, str, str]], run: str, reference: str,
                key: str = "accuracy") -> Estimate:
    """`run`'s row average minus `reference`'s on the items both evaluated, every domain of the columns."""
    parts = [(runs[(domain, run)], runs[(domain, reference)], [name for d, name, _ in columns if d == domain])
             for domain in dict.fromkeys(domain for domain, _, _ in columns)
             if (domain, run) in runs and (domain, reference) in runs]
    return paired_difference(parts, key)


def _cell(runs: Runs, domain: str, run: str, name: str, key: str = "accuracy") -> Estimate:
    return runs[(domain, run)].testset(name, key) if (domain, run) in runs else Estimate(math.nan)


def _accuracy_rows(config: dict[str, Any], runs: Runs, columns: list[tuple[str, str, str]], run_names: list[str],
                   paper_table: str | None, paper_key: Any = None, labels: dict[str, str] | None = None,
                   paired: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Rows run × test set (accuracy % with its interval, Avg. = mean of the row's cells), each followed by the
    paper's row and Δ; with `paired`, each run's paired difference from ENVISIONS on the same items."""
    paper = paper_rows(config, paper_table) if paper_table else {}
    paper_columns = [_paper_column(domain, name) for domain, name, _ in columns]
    full_match = sorted(filter(None, paper_columns)) == sorted(paper_numbers()["testsets"]) and all(paper_columns)
    held = ["held-out" if _held_out(config, domain, name) else "held-in" for domain, name, _ in columns]
    extra = {f"Δ vs {DEFAULT_RUN}": "", "p": ""} if paired else {}
    rows = [{"run": "held-out?", "method": "",
             **{label: ("✓" if mark == "held-out" else "✗") for (_, _, label), mark in zip(columns, held)},
             "Avg.": "", **extra}]
    for run in run_names:
        estimates = [_cell(runs, domain, run, name) for domain, name, _ in columns]
        values = [pct(estimate.value) for estimate in estimates]
        average = _row_average(runs, columns, run)
        method = method_of(config, run)
        row = {"run": (labels or {}).get(run, run), "method": method,
               **{label: estimate.cell() for (_, _, label), estimate in zip(columns, estimates)},
               "Avg.": average.cell()}
        if paired:
            difference = _difference(runs, columns, run, DEFAULT_RUN) if run != DEFAULT_RUN else None
            row[f"Δ vs {DEFAULT_RUN}"] = difference.cell(signed=True) if difference else MISSING
            row["p"] = intervals.format_p(difference.p) if difference else MISSING
        rows.append(row)
        key = paper_key(run) if callable(paper_key) else (run if run in paper else method)
        published = paper.get(key) if any(paper_columns) else None
        if not published:
            continue
        theirs = [published.get(column) if column else None for column in paper_columns]
        rows.append({"run": f"{(labels or {}).get(run, run)} · paper", "method": method,
                     **{label: fmt(value) for (_, _, label), value in zip(columns, theirs)},
                     "Avg.": fmt(published.get("avg")), **extra})
        diffs = [ours - their if their is not None and not math.isnan(ours) else None
                 for ours, their in zip(values, theirs)]
        avg_diff = pct(average.value) - published["avg"] if full_match and published.get("avg") is not None else None
        rows.append({"run": f"{(labels or {}).get(run, run)} · Δ", "method": method,
                     **{label: fmt(value, signed=True) for (_, _, label), value in zip(columns, diffs)},
                     "Avg.": fmt(avg_diff, signed=True), **extra})
    notes = ["Accuracy in % at each run's last iteration; Avg. is the mean over the row's test sets; "
             "'held-out?' ✓ marks test sets configured with held_in: false; '—' = not configured or not reported.",
             INTERVAL_NOTE]
    if paired:
        notes.append(PAIRED_NOTE)
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
    """Methods × the test sets of all domains, held-out marks, Avg., each run's paired difference from
    ENVISIONS; the paper's Table 2 beside."""
    runs = load_runs(entries)
    columns = _columns(config, report_domains(config))
    frame, notes = _accuracy_rows(config, runs, columns, _run_names(runs), "table2", paired=True)
    return Table("table2", frame, notes)


def table3(config: dict[str, Any], entries: Entries) -> Table:
    """ENVISIONS and its ablations (no_refine, no_self_reward, no_pool, no_l2), each paired with ENVISIONS."""
    runs = load_runs(entries)
    names = _run_names(runs)
    frame, notes = _accuracy_rows(config, runs, _columns(config, report_domains(config)), names, "table3",
                                  paired=True)
    if names == [DEFAULT_RUN]:
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
    runs = load_runs(entries)
    names = sorted(_run_names(runs), key=lambda run: (_k_of(config, run) or 0, run))
    labels = {run: f"K={'/'.join(map(str, _ks_of(config, run)))} ({run})" for run in names}
    frame, notes = _accuracy_rows(config, runs, _columns(config, report_domains(config)), names, "table5",
                                  paper_key=lambda run: _k_of(config, run), labels=labels)
    if len(names) == 1:
        notes.append("No runs overriding explore.k were configured.")
    return Table("table5", frame, notes)


def table8(config: dict[str, Any], entries: Entries) -> Table:
    """Accuracy with and without one greedy self-refine pass, for the runs with eval.self_refine."""
    runs = load_runs(entries)
    if not runs:
        return Table("table8", pd.DataFrame(), ["No run has eval.self_refine: true, so there is nothing to show."])
    domains = [domain for domain in report_domains(config) if any(d == domain for d, _ in runs)]
    columns = _columns(config, domains)
    paper = paper_rows(config, "table8")
    rows = []
    for run in _run_names(runs):
        method = method_of(config, run)
        for part, key, suffix in (("plain", "accuracy", ""), ("self_refined", "accuracy_self_refined",
                                                                " + self-refine")):
            estimates = [_cell(runs, domain, run, name, key) for domain, name, _ in columns]
            values = [pct(estimate.value) for estimate in estimates]
            rows.append({"run": run + suffix, "method": method,
                         **{label: estimate.cell() for (_, _, label), estimate in zip(columns, estimates)},
                         "Avg.": _row_average(runs, columns, run, key).cell()})
            published = (paper.get(run) or paper.get(method) or {}).get(part)
            if published:
                theirs = [published.get(name) if _paper_column(domain, name) else None for domain, name, _ in columns]
                rows.append({"run": f"{run}{suffix} · paper", "method": method,
                             **{label: fmt(value) for (_, _, label), value in zip(columns, theirs)}, "Avg.": MISSING})
                rows.append({"run": f"{run}{suffix} · Δ", "method": method,
                             **{label: fmt(ours - their if their is not None and not math.isnan(ours) else None,
                                            signed=True)
                                for (_, _, label), ours, their in zip(columns, values, theirs)}, "Avg.": MISSING})
    notes = ["Accuracy in % at each run's last iteration, before and after one greedy refine pass on every "
             "prediction (eval.self_refine); only domains where a run refines at test time are shown.",
             INTERVAL_NOTE, paper_note(config, "table8")]
    return Table("table8", pd.DataFrame(rows), notes)


def table9(config: dict[str, Any], entries: Entries) -> Table:
    """Per-domain average of continual-training runs (strategy.init: previous) against ENVISIONS."""
    runs = load_runs(entries)
    names = _run_names(runs)
    continual = [run for run in names if run != DEFAULT_RUN]
    domains = report_domains(config)
    paper = paper_rows(config, "table9")

    def columns_of(domain: str | None) -> list[tuple[str, str, str]]:
        """A domain's test sets, or (None) every test set of every domain, as Table 2's Avg."""
        return _columns(config, domains if domain is None else [domain])

    rows = []
    for domain in [*domains, None]:
        key = domain or "average"
        row: dict[str, str] = {"domain": key}
        scores = {run: _row_average(runs, columns_of(domain), run) for run in [*continual, DEFAULT_RUN]}
        for run in continual:
            row[run] = scores[run].cell()
        row[DEFAULT_RUN] = scores[DEFAULT_RUN].cell()
        for run in continual:
            row[f"Δ ({DEFAULT_RUN} − {run})"] = _difference(runs, columns_of(domain), DEFAULT_RUN, run).cell(
                signed=True)
        published = paper.get(key)
        if published:
            row["continual · paper"] = fmt(published["continual"])
            row[f"{DEFAULT_RUN} · paper"] = fmt(published["envisions"])
            for run in continual:
                row[f"{run} − paper"] = fmt(pct(scores[run].value) - published["continual"], signed=True)
            row[f"{DEFAULT_RUN} − paper"] = fmt(pct(scores[DEFAULT_RUN].value) - published["envisions"],
                                                 signed=True)
        rows.append(row)
    notes = ["Accuracy in % at each run's last iteration: a domain's row is the mean over its test sets, "
             "'average' the mean over all test sets of the run.", INTERVAL_NOTE,
             "Δ: the paired difference on the same test items, with its 95% paired bootstrap interval.",
             paper_note(config, "table9")]
    if not continual:
        notes.append("No continual-training runs (method envisions with strategy.init: previous) were configured.")
    return Table("table9", pd.DataFrame(rows).fillna(MISSING), notes)


def table11(config: dict[str, Any], entries: Entries) -> Table:
    """Success per task family (paper Table 11: MiniWob++), from eval.json's testsets.<name>.per_task: the
    breakdown an environment reports for its test sets (the web's, by MiniWob task)."""
    runs = load_runs(entries)
    if not runs:
        return Table("table11", pd.DataFrame(), ["No run of a domain whose environment reports success per task "
                                                 "(the web's) was configured."])
    domains = {domain for domain, _ in runs}
    series: dict[str, dict[str, Estimate]] = {}
    for (domain, run), accuracy in runs.items():
        names = list(domain_settings(config, domain)["testsets"])
        for name in names:
            per_task = accuracy.per_task(name)
            if per_task:
                label = "/".join([*([domain] if len(domains) > 1 else []), run, *([name] if len(names) > 1 else [])])
                series[label] = per_task
    if not series:
        return Table("table11", pd.DataFrame(),
                     ["The runs' eval.json files have no per-task breakdown (testsets.<name>.per_task)."])
    tasks = sorted({task for values in series.values() for task in values})
    rows = [{"task": task, **{column: values[task].cell() if task in values else MISSING
                              for column, values in series.items()}} for task in tasks]
    rows.append({"task": "average", **{column: fmt(nan_mean(pct(e.value) for e in values.values()))
                                       for column, values in series.items()}})
    notes = ["Success rate in % per task (MiniWob++: per task of the benchmark) at each run's last iteration, with its 95% interval (Wilson over "
             "the task's episodes; replicates: mean ± t interval); 'average' is the mean over tasks."]
    return Table("table11", pd.DataFrame(rows), notes)


TABLE_BUILDERS = {"table2": table2, "table3": table3, "table5": table5, "table8": table8, "table9": table9,
                  "table11": table11}


def write_table(config: dict[str, Any], name: str, entries: Entries, md: str, csv: str, tex: str) -> Table:
    from envisions_flow.report.agent_tables import AGENT_TABLE_BUILDERS

    table = {**TABLE_BUILDERS, **AGENT_TABLE_BUILDERS}[name](config, entries)
    table.write(md, csv, tex)
    return table
