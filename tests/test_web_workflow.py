"""The web domain in the workflow: fresh MiniWob episodes every iteration, per-task evaluation, a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_workflow import ROOT, TINY, _planned_files, place_base_model, snakemake, workflow_copy

from envisions_flow.environments.math import MathEnvironment
from envisions_flow.workflow import artifacts as art

# ---- the web domain: fresh episodes every iteration ----------------------------------------------

WEB = {
    "generation": {"batch_size": 8},
    "default_domains": ["web"],
    "domains": {"web": {
        "iterations": 2,
        "train": {"preset": "miniwob", "tasks": ["click-button", "focus-text"], "split": "train", "episodes": 1,
                  "seed": 1, "fresh_seeds": True},
        "testsets": {"miniwob": {"preset": "miniwob", "tasks": ["click-button", "focus-text"], "split": "test",
                                 "episodes": 1, "seed": 2}},
        "explore": {"k": 2, "max_new_tokens": 48},
        "refine": {"max_new_tokens": 48},
        "eval": {"max_new_tokens": 48},
        "training": {"epochs": 1, "effective_batch_size": 2, "per_device_batch_size": 2, "max_length": 1024},
    }},
}


def test_web_train_episodes_are_fresh_every_iteration_and_never_test_episodes():
    from envisions_flow.datasets.loaders import DataError, check_source
    from envisions_flow.datasets.miniwob import miniwob_episodes
    from envisions_flow.workflow.config import ConfigError, check, dataset_spec, train_dataset

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert [train_dataset(config, "web", i) for i in (1, 2)] == ["train.iter1", "train.iter2"]
    assert train_dataset(config, "math", 2) == "train"
    iterations = [miniwob_episodes(dataset_spec(config, "web", f"train.iter{i}"), "train") for i in range(1, 6)]
    test = set(miniwob_episodes(dataset_spec(config, "web", "miniwob"), "test"))
    assert all(len(episodes) == 2200 == len(set(episodes)) for episodes in iterations)  # 50 per task, 44 tasks
    assert len(test) == 30 * 44
    seen: set = set()
    for episodes in iterations:
        assert not seen & set(episodes) and not test & set(episodes)
        seen |= set(episodes)
    # iteration 1 is the static set; the seeds are reproducible
    assert iterations[0] == miniwob_episodes(dataset_spec(config, "web", "train"), "train")
    assert iterations[1] == miniwob_episodes(dataset_spec(config, "web", "train.iter2"), "train")

    with pytest.raises(ConfigError, match="domains.math.train.fresh_seeds"):
        dataset_spec(config, "math", "train.iter2")
    with pytest.raises(DataError, match="train.fresh_seeds: generated data is fixed"):
        check_source({"kind": "generated", "n": 2, "fresh_seeds": True}, "domains.math.train", MathEnvironment)
    bad = yaml.safe_load(yaml.safe_dump(config))
    bad["domains"]["web"]["testsets"]["miniwob"]["fresh_seeds"] = True
    with pytest.raises(ConfigError, match="testsets.miniwob.fresh_seeds"):
        check(bad)
    bad["domains"]["web"]["testsets"]["miniwob"] = {"preset": "miniwob", "episodes": 2}  # split train by default
    with pytest.raises(ConfigError, match="testsets.miniwob.split"):
        check(bad)


def _explore_inputs(dry_run_output: str) -> dict[str, str]:
    """samples.parquet -> the task file its explore job reads, from a dry run's job list."""
    return {output: inputs[0] for rule, inputs, output in _planned_files(dry_run_output) if rule == "explore"}


def test_web_explore_reads_its_iterations_episodes_and_runs_share_iteration_one(tmp_path: Path):
    workdir = workflow_copy(tmp_path / "wf")
    config = {**WEB, "domains": {**WEB["domains"], "math": TINY["domains"]["math"]},
              "runs": {"star": {"method": "star", "domains": ["web"]}}}
    targets = ["results/web/iter2/samples.parquet", "results/web/star/iter2/samples.parquet",
               "results/math/iter2/samples.parquet"]
    result = snakemake(workdir, "-n", *targets, config=config)
    assert _explore_inputs(result.stdout) == {
        "results/web/iter1/samples.parquet": "results/web/data/train.iter1.parquet",
        "results/web/iter2/samples.parquet": "results/web/data/train.iter2.parquet",
        "results/web/star/iter2/samples.parquet": "results/web/data/train.iter2.parquet",
        "results/math/iter1/samples.parquet": "results/math/data/train.parquet",
        "results/math/iter2/samples.parquet": "results/math/data/train.parquet",
    }  # STaR's iteration 1 samples are the default run's: same episodes, same settings
    assert "results/web/star/iter1/samples.parquet" not in result.stdout


def test_eval_reports_raw_success_and_success_per_web_task():
    from envisions_flow.environments.base import Execution, Task
    from envisions_flow.environments.web import web_success

    tasks = [Task("click-button:1", "q", "click-button"), Task("click-button:2", "q", "click-button"),
             Task("focus-text:3", "q", "focus-text"), Task("focus-text:4", "q", "focus-text")]
    results = [Execution(1, "1", "", 1.0), Execution(0, "1", "too_slow", 9.0), Execution(0, "-1", "wrong_answer", 1.0),
               Execution(0, None, "syntax", 0.0)]
    report = web_success(tasks, results)
    assert report["raw_success"] == 0.5 and report["task_average"] == 0.25
    assert report["per_task"] == {
        "click-button": {"n": 2, "correct": 1, "raw_correct": 2, "success": 0.5, "raw_success": 1.0},
        "focus-text": {"n": 2, "correct": 0, "raw_correct": 0, "success": 0.0, "raw_success": 0.0},
    }


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (make setup)")
def test_web_domain_explores_and_evaluates_in_the_browser(tmp_path: Path, base_model: Path):
    workdir = workflow_copy(tmp_path / "wf")
    place_base_model(base_model, workdir)
    config = {**WEB, "domains": {"web": {**WEB["domains"]["web"], "iterations": 1}}}
    snakemake(workdir, "results/web/iter1/samples.exec.parquet", "results/web/iter0/eval.json", config=config)
    results = workdir / "results" / "web"
    tasks = art.read_table(results / "data" / "train.iter1.parquet", art.TASKS)
    assert sorted(tasks["answer"]) == ["click-button", "focus-text"]
    assert all(task_id.startswith(answer + ":") for task_id, answer in zip(tasks["id"], tasks["answer"]))
    assert tasks["question"].str.contains("data-wob_ref").all()  # the rendered observation
    samples = art.read_table(results / "iter1" / "samples.parquet", art.GENERATIONS)
    assert samples.groupby("id").size().tolist() == [2, 2] and set(samples["id"]) == set(tasks["id"])
    assert samples["prompt"].str.contains("agent.click_xpath").all()
    executions = art.read_table(results / "iter1" / "samples.exec.parquet", art.EXECUTIONS)
    known = {"", "wrong_answer", "no_program", "syntax", "forbidden", "limit", "runtime", "bad_key", "not_done",
             "too_slow", "bad_xpath", "no_element", "timeout", "navigated_away", "page_crash", "browser_crash"}
    assert len(executions) == 4 and set(executions["error_class"]) <= known and set(executions["b"]) <= {0, 1}
    # a program that reached the browser leaves MiniWob's raw reward; one the interpreter refused does not
    ran = executions["error_class"].isin({"", "wrong_answer", "not_done", "too_slow", "bad_xpath", "no_element"})
    assert executions.loc[ran, "value"].notna().all()

    evaluation = yaml.safe_load((results / "iter0" / "eval.json").read_text())
    entry = evaluation["testsets"]["miniwob"]
    assert entry["n"] == 2 and set(entry["per_task"]) == {"click-button", "focus-text"}
    assert {"raw_success", "task_average", "accuracy"} <= set(entry) and "average_raw_success" in evaluation
    assert all(task["n"] == 1 for task in entry["per_task"].values())
    test_ids = set(art.read_table(results / "data" / "miniwob.parquet", art.TASKS)["id"])
    assert not test_ids & set(tasks["id"])
