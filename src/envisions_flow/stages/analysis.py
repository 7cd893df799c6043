"""Per-run analysis: Δlog p of U2 pairs, exploration metrics per iteration, the summary table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from envisions_flow.methods.analysis import correct_unique, exploration_metrics, log_prob_margins
from envisions_flow.report.accuracy import RunAccuracy, paired_difference
from envisions_flow.report.intervals import format_p
from envisions_flow.stages.common import iteration_of
from envisions_flow.stages.settings import AnalysisSettings, MarginsSettings, settings_for
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.runs import method_of, parse_run_dir

log = logging.getLogger("envisions_flow")


def margins(config: dict[str, Any], run: str, model_dir: str, u2_path: str, out: str) -> None:
    """Δlog p of the iteration's U2 pairs under its trained checkpoint (paper Fig. 5b)."""
    environment = settings_for(MarginsSettings, config, run).train_environment()
    frame = log_prob_margins(model_dir, art.read_table(u2_path, art.U2), environment)
    art.write_table(frame, out, art.MARGINS)
    log.info("%s: mean Δlog p %.4f over %d pairs", out, frame["margin"].mean() if len(frame) else float("nan"),
             len(frame))


def analyze(config: dict[str, Any], run: str, eval_paths: Sequence[str], exec_paths: Sequence[str],
            pool_paths: Sequence[str], margin_paths: Sequence[str], out: str) -> None:
    """One row per iteration: accuracy, solved/newly solved, EA/STB, Δlog p, correct-and-unique trajectories.

    `exec_paths` are the execution results of each iteration (samples, and
    refinements when the run refines; possibly read from another run's directory
    where shared); iteration 0 (the base model) has accuracy only.
    """
    domain, run_name = parse_run_dir(run)
    # what EA/STB count as one input: the task, unless the environment says otherwise (web: the MiniWob task,
    # since every iteration explores fresh episodes of it)
    environment = settings_for(AnalysisSettings, config, run).train_environment()
    unit = getattr(environment, "exploration_unit", lambda task_id: task_id)
    solved: dict[int, set[str]] = {}
    for path in exec_paths:
        judged = art.read_table(path, art.EXECUTIONS)
        solved.setdefault(iteration_of(path), set()).update(unit(task_id) for task_id in judged.loc[judged["b"] == 1, "id"])
    pools = {iteration_of(path): path for path in pool_paths}
    pair_margins = {iteration_of(path): path for path in margin_paths}
    exploration = exploration_metrics(solved).set_index("iteration") if solved else pd.DataFrame()
    rows = []
    for path in eval_paths:
        iteration = iteration_of(path)
        accuracy = RunAccuracy.load([path])
        average = accuracy.average(list(accuracy.reports[0]["testsets"]))
        row: dict[str, Any] = {"domain": domain, "run": run_name, "method": method_of(config, run_name),
                               "iteration": iteration,
                               "average_accuracy": json.loads(Path(path).read_text())["average"],
                               "average_accuracy_low": average.low, "average_accuracy_high": average.high,
                               "solved": None, "newly_solved": None, "exploratory_ability": None,
                               "stability": None, "exploratory_ability_cumulative": None,
                               "stability_cumulative": None, "delta_logp": None, "correct_unique": None}
        if iteration in solved:
            row.update(exploration.loc[iteration].to_dict())
            row["correct_unique"] = correct_unique(art.read_table(pools[iteration], art.POOL))
            pairs = art.read_table(pair_margins[iteration], art.MARGINS)
            row["delta_logp"] = float(pairs["margin"].mean()) if len(pairs) else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    art.write_table(frame, out, art.ANALYSIS)
    log.info("%s:\n%s", out, frame.to_string(index=False))


def summarize(eval_paths: Sequence[str], pool_paths: Sequence[str], out_md: str) -> None:
    """A Markdown table of accuracy per iteration with 95% intervals, the pool's growth beside it, and the
    last iteration's gain over the base model (iteration 0) on the same test items."""
    pools = {}
    for path in pool_paths:
        pool = art.read_table(path, art.POOL)
        pools[iteration_of(path)] = (len(pool), int((pool["b"] == 1).sum()))
    evaluations = {iteration_of(path): RunAccuracy.load([path]) for path in eval_paths}
    names = list(next(iter(evaluations.values())).reports[0]["testsets"]) if evaluations else []
    lines = ["| iteration | " + " | ".join(names) + " | average | pool size | pool positives |",
             "|---" * (len(names) + 4) + "|"]
    for iteration, accuracy in sorted(evaluations.items()):
        size, positives = pools.get(iteration, ("—", "—"))
        cells = [accuracy.testset(name).cell() for name in names]
        lines.append(f"| {iteration} | " + " | ".join(cells) + f" | {accuracy.average(names).cell()} | "
                     f"{size} | {positives} |")
    lines += ["", "Accuracy in %, [95% interval]: Wilson's over a test set's items; for the average, a bootstrap "
                  "over items resampled within each test set."]
    last = max(evaluations, default=0)
    if last > 0 and 0 in evaluations:
        gain = paired_difference([(evaluations[last], evaluations[0], names)])
        verdict = ("outside the noise: its interval excludes 0" if gain.low > 0 or gain.high < 0
                   else "within the noise: its interval holds 0")
        p = format_p(gain.p)
        lines.append(f"Iteration {last} vs the base model (iteration 0, few-shot), on the same items: "
                     f"{gain.cell(signed=True)} points (paired bootstrap), McNemar p {p if p[0] == '<' else '= ' + p}; "
                     f"{verdict}.")
    art.write_text("\n".join(lines) + "\n", out_md)
    log.info("%s:\n%s", out_md, "\n".join(lines))
