"""What the report holds: its tables and figures, which runs each compares, and the paper's published numbers
(`report/paper_numbers.yaml`, transcribed from arXiv 2406.11736).

`report_runs` says which (domain, run) pairs a table or figure needs, so the workflow's report rules ask for
exactly those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import yaml

from envisions_flow.environments.registry import environment_class
from envisions_flow.workflow.config import domain_settings
from envisions_flow.workflow.runs import AGENT_METHODS, DEFAULT_RUN, is_replicate, method_of, run_settings, runs_of

MISSING = "—"
ABLATIONS = ("no_refine", "no_self_reward", "no_pool", "no_l2")
REINFORCED = ("sft_dpo", "self_rewarding", "eto")  # dashed in the figures, as in the paper's Fig. 3
DEFAULT_PAPER_MODEL = "llama2-7b"


@dataclass(frozen=True)
class ReportItem:
    """One table or figure: its title, which runs it compares and what it reads of each (rules/report.smk)."""

    title: str
    runs: str  # the selection of runs it compares (_selected): its own name, or "figures" for every figure
    reads: str  # "eval": each run's last eval.json; "evals": every iteration's; "analysis": analysis.parquet
    category: str
    subcategory: str
    agent_method: str | None = None  # the agent method whose runs a table compares (they have tables of their own)

    @property
    def is_figure(self) -> bool:
        return self.reads == "analysis"


def _table(title: str, name: str, subcategory: str, reads: str = "eval", category: str = "Tables",
           agent_method: str | None = None) -> ReportItem:
    return ReportItem(title, name, reads, category, subcategory, agent_method)


def _figure(title: str, subcategory: str) -> ReportItem:
    return ReportItem(title, "figures", "analysis", "Figures", subcategory)


# The report's tables and figures, in the order report_all lists them; the caption of each is report/<name>.rst.
REPORT_ITEMS: dict[str, ReportItem] = {
    "table2": _table("Table 2: main results (last iteration; few-shot: the base model)", "table2", "Table 2"),
    "table3": _table("Table 3: ablations of ENVISIONS' components", "table3", "Table 3"),
    "table5": _table("Table 5: scaling the number of samples K", "table5", "Table 5"),
    "table8": _table("Table 8: inference-time self-refinement", "table8", "Table 8"),
    "table9": _table("Table 9: training recipe, continual training vs. training the base model each iteration",
                     "table9", "Table 9"),
    "table11": _table("Table 11: MiniWob++ success per task", "table11", "Table 11"),
    "ipr_table2": _table("IPR Table 2: average final reward of the SFT agent and IPR (best iteration)", "ipr_table2",
                         "IPR Table 2", "evals", "Agent methods", "ipr"),
    "ipr_table4": _table("IPR Table 4: IPR by iteration", "ipr_table4", "IPR Table 4", "evals", "Agent methods", "ipr"),
    "mixture_table3": _table("Mixture Table 3: functional correctness, capability score and VERTEX_DTW with bootstrap "
                             "CIs", "mixture_table3", "Mixture Table 3", "evals", "Agent methods", "mixture"),
    "fig_accuracy": _figure("Fig. 3 / 6(a): average accuracy per iteration", "Fig. 3 and 6(a)"),
    "fig_explored": _figure("Fig. 6(b): explored (solved) inputs per iteration", "Fig. 6(b)"),
    "fig_ea_stb": _figure("Fig. 5(a): exploratory ability vs. stability (cumulative, last iteration)", "Fig. 5(a)"),
    "fig_delta_logp": _figure("Fig. 5(b): Δlog p between a⁺ and a⁻ per iteration", "Fig. 5(b)"),
    "fig_unique": _figure("Fig. 5(c): correct and unique trajectories at the last iteration", "Fig. 5(c)"),
}
TABLES = tuple(name for name, item in REPORT_ITEMS.items() if not item.is_figure)
FIGURES = tuple(name for name, item in REPORT_ITEMS.items() if item.is_figure)
AGENT_TABLES = {name: item.agent_method for name, item in REPORT_ITEMS.items() if item.agent_method}


def report_domains(config: dict[str, Any]) -> list[str]:
    """The domains the default target builds (default_domains), in the order the config lists them
    (config/config.yaml lists the paper's: agent, math, logic)."""
    chosen = set(config.get("default_domains") or config["domains"])
    return [domain for domain in config["domains"] if domain in chosen]


def _overrides(config: dict[str, Any], run: str) -> dict[str, Any]:
    return {} if run == DEFAULT_RUN else (config["runs"][run].get("overrides") or {})


def _is_main(config: dict[str, Any], run: str) -> bool:
    """A Table 2 method: ENVISIONS itself or a baseline (not an ablation, not a variant of ENVISIONS)."""
    method = method_of(config, run)
    return run == DEFAULT_RUN or (method != "envisions" and method not in ABLATIONS)


def _selected(config: dict[str, Any], domain: str, run: str, name: str) -> bool:
    method = method_of(config, run)
    if name in AGENT_TABLES or method in AGENT_METHODS:  # agent runs have tables of their own
        return AGENT_TABLES.get(name) == method
    if name in ("table2", "table11", "figures"):
        return _is_main(config, run) and (name != "table11" or _reports_per_task(config, domain))
    if name == "table3":
        return run == DEFAULT_RUN or method in ABLATIONS
    if name == "table5":
        return run == DEFAULT_RUN or (method == "envisions" and "k" in (_overrides(config, run).get("explore") or {}))
    if name == "table8":
        return bool(run_settings(config, domain, run)["eval"].get("self_refine"))
    if name == "table9":
        return run == DEFAULT_RUN or (method == "envisions"
                                      and (_overrides(config, run).get("strategy") or {}).get("init") == "previous")
    raise ValueError(f"unknown table or figure set {name!r}")


def _reports_per_task(config: dict[str, Any], domain: str) -> bool:
    """Whether a domain's environment adds metrics of its own to each test set (the web: success per task)."""
    return callable(getattr(environment_class(domain, domain_settings(config, domain)), "testset_metrics", None))


def report_runs(config: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """The (domain, run) pairs a table (`table2`, ...) or the figures (`figures`) compare, in display order.

    Only the runs the default target builds (default_runs, when set) are reported, so
    a demo's report does not start the paper's other runs. Replicates (<run>_rep2, ...) are reported
    with the run they replicate (the workflow's `report_entries` lists them), not as runs of their own.
    """
    default_runs = config.get("default_runs")
    return [(domain, run) for domain in report_domains(config) for run in runs_of(config, domain)
            if (default_runs is None or run in default_runs) and not is_replicate(config, run)
            and _selected(config, domain, run, name)]


@lru_cache(maxsize=1)
def paper_numbers() -> dict[str, Any]:
    """The published numbers (report/paper_numbers.yaml), rows as {column: value}."""
    raw = yaml.safe_load(resources.files("envisions_flow").joinpath("report/paper_numbers.yaml").read_text())
    numbers: dict[str, Any] = {"testsets": raw["testsets"], "models": raw["models"]}
    for table in ("table2", "table3", "table5", "table8", "table9"):
        columns = raw[table]["columns"]
        numbers[table] = {
            model: {key: ({part: dict(zip(columns, values)) for part, values in row.items()}
                          if isinstance(row, dict) else dict(zip(columns, row)))
                    for key, row in rows.items()}
            for model, rows in raw[table].items() if model != "columns"}
    return numbers


def paper_model(config: dict[str, Any]) -> str | None:
    return (config.get("report") or {}).get("paper_model", DEFAULT_PAPER_MODEL)


def paper_rows(config: dict[str, Any], table: str) -> dict[str, Any]:
    model = paper_model(config)
    return paper_numbers()[table].get(model, {}) if model else {}


def paper_note(config: dict[str, Any], table: str) -> str:
    model = paper_model(config)
    if not model:
        return "The paper's numbers are not shown (report.paper_model: null)."
    label = paper_numbers()["models"][model]
    if not paper_numbers()[table].get(model):
        return f"The paper gives no {label} numbers for this table."
    if table == "table9":
        return (f"Columns marked 'paper' are the published {label} numbers per domain (Agent = web); "
                f"'− paper' is this run minus the paper, in points.")
    return (f"Rows marked 'paper' are the published {label} numbers for the test sets whose names match the "
            f"paper's; 'Δ' is this run minus the paper, in points.")


Entries = Sequence[Sequence[str]]  # (domain, run, path) per run, as the report rules pass them
