"""The paper's figures (Fig. 3, 5, 6) from the runs' `analysis.parquet`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from envisions_flow.report.catalogue import REINFORCED, REPORT_ITEMS, Entries
from envisions_flow.report.intervals import replicate_interval
from envisions_flow.workflow import artifacts as art


def _load_analyses(entries: Entries) -> pd.DataFrame:
    """Every entry's rows; a run replicated over seeds has one entry per replicate (numbered in `replicate`)."""
    frames, seen = [], {}
    for domain, run, path in entries:
        frame = art.read_table(path, art.ANALYSIS)
        replicate = seen[(domain, run)] = seen.get((domain, run), 0) + 1
        # the row's run is the report's, also where the file is shared or a replicate's
        frames.append(frame.assign(domain=domain, run=run, replicate=replicate))
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=[*art.ANALYSIS.names, "replicate"]))


def _with_intervals(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per iteration: the value, and its 95% interval: across replicates (mean and t interval) when the run
    has several, else the accuracy's own (`<column>_low`, `<column>_high` in analysis.parquet), else none."""
    out = []
    for iteration, group in rows.groupby("iteration", sort=True):
        if group["replicate"].nunique() > 1:
            value, low, high = replicate_interval(group[column].astype(float).tolist())
        else:
            value = float(group[column].iloc[0])
            low, high = (float(group[f"{column}_{end}"].iloc[0]) if f"{column}_{end}" in group else math.nan
                         for end in ("low", "high"))
        out.append({"iteration": iteration, "value": value, "low": low, "high": high})
    return pd.DataFrame(out)


def _last_iteration(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run's row at its last iteration, the mean over its replicates where it has several."""
    if frame.empty:
        return frame
    frame = frame[frame["iteration"] == frame.groupby("run")["iteration"].transform("max")]
    numbers = ["stability_cumulative", "exploratory_ability_cumulative", "correct_unique"]
    means = frame.groupby("run", sort=False)[numbers].agg(lambda values: values.astype(float).mean())
    return means.join(frame.groupby("run", sort=False)["method"].first()).reset_index()


def _style(method: str) -> dict[str, Any]:
    return {"linestyle": "--" if method in REINFORCED else "-", "marker": "o", "markersize": 3}


def _panels(domains: Sequence[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, max(1, len(domains)), figsize=(max(6.4, 4.2 * len(domains)), 3.8), squeeze=False)
    return plt, figure, list(axes[0])


def _lines(ax, frame: pd.DataFrame, column: str, scale: float = 1.0) -> None:
    """One line per run, with its 95% intervals as error bars (and a band for the few-shot reference)."""
    for run, rows in frame.groupby("run", sort=False):
        rows = rows.dropna(subset=[column])
        if rows.empty:
            continue
        method = rows["method"].iloc[0]
        points = _with_intervals(rows, column)
        errors = [(points["value"] - points["low"]) * scale, (points["high"] - points["value"]) * scale]
        if len(points) == 1 and points["iteration"].iloc[0] == 0:  # few-shot: the base model, a reference line
            ax.axhline(points["value"].iloc[0] * scale, color="grey", linestyle=":", label=run)
            if not points[["low", "high"]].isna().any(axis=None):
                ax.axhspan(points["low"].iloc[0] * scale, points["high"].iloc[0] * scale, color="grey", alpha=0.12)
        else:
            ax.errorbar(points["iteration"], points["value"] * scale, yerr=[e.fillna(0) for e in errors], label=run,
                        capsize=3, **_style(method))


def figure(name: str, entries: Entries, png: str | Path, svg: str | Path) -> None:
    """Draw one of FIGURES, a panel per domain, as PNG and SVG."""
    data = _load_analyses(entries)
    domains = list(dict.fromkeys(domain for domain, _, _ in entries))
    plt, fig, axes = _panels(domains)
    from matplotlib.ticker import MaxNLocator

    for ax, domain in zip(axes, domains):
        frame = data[data["domain"] == domain]
        ax.set_title(domain)
        ax.grid(alpha=0.3)
        if name not in ("fig_ea_stb", "fig_unique"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name == "fig_accuracy":
            _lines(ax, frame, "average_accuracy", 100.0)
            ax.set_xlabel("iteration")
            ax.set_ylabel("average accuracy (%)")
        elif name == "fig_explored":
            _lines(ax, frame, "solved")
            ax.set_xlabel("iteration")
            ax.set_ylabel("explored (solved) inputs")
        elif name == "fig_delta_logp":
            _lines(ax, frame, "delta_logp")
            ax.set_xlabel("iteration")
            ax.set_ylabel("Δlog p (a⁺ − a⁻, per token)")
        elif name in ("fig_ea_stb", "fig_unique"):
            last = _last_iteration(frame.dropna(subset=["exploratory_ability_cumulative"]))
            if name == "fig_ea_stb":
                for _, row in last.iterrows():
                    ax.scatter(row["stability_cumulative"], row["exploratory_ability_cumulative"], label=row["run"],
                               marker="s" if row["method"] in REINFORCED else "o")
                    ax.annotate(row["run"], (row["stability_cumulative"], row["exploratory_ability_cumulative"]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
                ax.set_xlabel("stability (cumulative)")
                ax.set_ylabel("exploratory ability (cumulative)")
            else:
                ax.bar(last["run"], last["correct_unique"].astype(float))
                ax.set_ylabel("correct & unique trajectories")
                ax.tick_params(axis="x", labelrotation=45)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif name not in ("fig_unique",):
            ax.legend(fontsize=7)
    fig.suptitle(REPORT_ITEMS[name].title, fontsize=10)
    fig.tight_layout()
    for path in (png, svg):
        fig.savefig(path, dpi=150 if str(path).endswith(".png") else None)
    plt.close(fig)
