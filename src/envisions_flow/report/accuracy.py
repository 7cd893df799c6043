"""A run's accuracies with their 95% intervals, read from its evaluations (one per replicate).

A run evaluated once gets Wilson intervals per test set and a bootstrap over items for an
average; a run replicated over seeds (`replicates`) gets the mean over its replicates and the
t interval across them. `paired_difference` compares two runs on the items both evaluated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from envisions_flow.report import intervals
from envisions_flow.workflow import artifacts as art

# eval.json key -> the eval.parquet column holding its per-item outcome
ITEM_COLUMNS = {"accuracy": "b", "accuracy_self_refined": "refined_b"}


@dataclass(frozen=True)
class Estimate:
    """An accuracy (or a difference of two) with its 95% interval; nan bounds where there is none."""

    value: float
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan  # McNemar's exact p-value of a paired difference of 0/1 outcomes
    replicates: int = 1

    def cell(self, signed: bool = False) -> str:
        """'32.5 [26.4, 39.3]' (one evaluation) or '32.5 ± 4.1' (the mean of replicates), in %."""
        if self.replicates > 1 and not math.isnan(self.low):
            sign = "+" if signed else ""
            return f"{100 * self.value:{sign}.1f} ± {100 * (self.high - self.low) / 2:.1f}"
        return intervals.format_interval(self.value, self.low, self.high, signed)


MISSING_ESTIMATE = Estimate(math.nan)


def eval_items_path(eval_json: str | Path) -> Path:
    """Where an evaluation keeps its per-item predictions: eval.parquet beside eval.json."""
    return Path(eval_json).with_suffix(".parquet")


class RunAccuracy:
    """The evaluations of one run (one per replicate, the same test sets) and the estimates they give.

    Per-item outcomes (eval.parquet beside each eval.json) are read when an estimate first needs them.
    """

    def __init__(self, reports: Sequence[dict[str, Any]], item_paths: Sequence[str | Path]):
        self.reports, self.item_paths = list(reports), list(item_paths)
        self._items: list[pd.DataFrame] | None = None

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> "RunAccuracy":
        paths = list(paths)
        return cls([json.loads(Path(path).read_text()) for path in paths], [eval_items_path(path) for path in paths])

    @property
    def items(self) -> list[pd.DataFrame]:
        if self._items is None:
            self._items = [art.read_table(path, art.EVAL) for path in self.item_paths]
        return self._items

    @property
    def replicates(self) -> int:
        return len(self.reports)

    def has(self, name: str, key: str = "accuracy") -> bool:
        return all(report["testsets"].get(name, {}).get(key) is not None for report in self.reports)

    def testset(self, name: str, key: str = "accuracy") -> Estimate:
        """One test set: Wilson's interval, or the t interval across replicates."""
        if not self.has(name, key):
            return MISSING_ESTIMATE
        entries = [report["testsets"][name] for report in self.reports]
        if len(entries) == 1:
            entry = entries[0]
            return Estimate(entry[key], *intervals.wilson(entry[key] * entry["n"], entry["n"]))
        return Estimate(*intervals.replicate_interval([entry[key] for entry in entries]),
                        replicates=len(entries))

    def outcomes(self, names: Sequence[str], key: str = "accuracy") -> dict[str, pd.DataFrame]:
        """Per test set, a frame of per-item outcomes: one row per item id, one column per replicate."""
        column = ITEM_COLUMNS[key]
        result = {}
        for name in names:
            if not self.has(name, key):
                continue
            per_replicate = [frame.loc[frame["testset"] == name].set_index("id")[column].astype(float)
                             for frame in self.items]
            result[name] = pd.concat(per_replicate, axis=1, keys=range(len(per_replicate))).dropna()
        return result

    def average(self, names: Sequence[str], key: str = "accuracy") -> Estimate:
        """The mean over test sets (those of `names` the run has): a bootstrap over items within each
        test set, or the t interval of the replicates' averages."""
        outcomes = self.outcomes(names, key)
        return average_of([outcomes])

    def per_task(self, name: str) -> dict[str, Estimate]:
        """Web: success per MiniWob task (Table 11), Wilson per task or t across replicates."""
        tasks: dict[str, list[dict[str, Any]]] = {}
        for report in self.reports:
            for task, entry in ((report["testsets"].get(name) or {}).get("per_task") or {}).items():
                tasks.setdefault(task, []).append(entry)
        estimates = {}
        for task, entries in tasks.items():
            if len(entries) == 1:
                estimates[task] = Estimate(entries[0]["success"],
                                           *intervals.wilson(entries[0]["correct"], entries[0]["n"]))
            else:
                estimates[task] = Estimate(*intervals.replicate_interval([e["success"] for e in entries]),
                                           replicates=len(entries))
        return estimates


def average_of(parts: Sequence[dict[str, pd.DataFrame]]) -> Estimate:
    """The mean over every test set of `parts` (one mapping per domain or run part) with its interval."""
    merged = {f"{index}/{name}": frame for index, part in enumerate(parts) for name, frame in part.items()
              if len(frame)}
    if not merged:
        return MISSING_ESTIMATE
    replicates = min(frame.shape[1] for frame in merged.values())
    if replicates == 1 and len(merged) == 1:  # one test set: its own (Wilson) interval
        outcomes = next(iter(merged.values())).iloc[:, 0]
        return Estimate(float(outcomes.mean()), *intervals.wilson(float(outcomes.sum()), len(outcomes)))
    if replicates == 1:
        items = {name: frame.iloc[:, 0].to_numpy() for name, frame in merged.items()}
        return Estimate(intervals.average(items), *intervals.bootstrap_average(items))
    averages = [intervals.average({name: frame.iloc[:, j].to_numpy() for name, frame in merged.items()})
                for j in range(replicates)]
    return Estimate(*intervals.replicate_interval(averages), replicates=replicates)


def paired_difference(parts: Sequence[tuple[RunAccuracy, RunAccuracy, Sequence[str]]],
                      key: str = "accuracy") -> Estimate:
    """A run's average accuracy minus a reference's over the items both evaluated, with its 95% paired
    bootstrap interval (items, and replicates where there are several) and McNemar's p for runs
    evaluated once. `parts`: (run, reference, test set names) per domain."""
    pairs = {}
    for index, (run, reference, names) in enumerate(parts):
        ours, theirs = run.outcomes(names, key), reference.outcomes(names, key)
        for name in names:
            if name not in ours or name not in theirs:
                continue
            common = ours[name].index.intersection(theirs[name].index).sort_values()
            if len(common):
                pairs[f"{index}/{name}"] = (ours[name].loc[common].to_numpy().T, theirs[name].loc[common].to_numpy().T)
    if not pairs:
        return MISSING_ESTIMATE
    result = intervals.paired_difference(pairs)
    return Estimate(result["difference"], result["low"], result["high"], result["p_mcnemar"])


def load_runs(entries: Iterable[Sequence[str]]) -> dict[tuple[str, str], RunAccuracy]:
    """{(domain, run): RunAccuracy} from report entries (domain, run, eval.json), one entry per replicate."""
    paths: dict[tuple[str, str], list[str]] = {}
    for domain, run, path in entries:
        paths.setdefault((domain, run), []).append(path)
    return {key: RunAccuracy.load(files) for key, files in paths.items()}

