"""Rerun triggers, derived mechanically: every rule's params are its stage's settings object, so changing any
config key its stage reads changes that rule's params, and no other rule's.

The keys a stage reads are recorded while its settings object is resolved from a run's view through a
mapping that logs every access (the stage reads nothing else: stages/settings.py); each is then changed
once at its source in the config (the domain's block, a run's overrides, the global generation block).
A real Snakemake run (`--touch` records params, a dry run with `--rerun-triggers params` names the jobs
whose params changed) checks a few of them end to end.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from snakemake.utils import validate

from envisions_flow.stages.settings import run_view
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.config import drop_removed_testsets
from envisions_flow.workflow.dag import RULE_SETTINGS, WITHOUT_SETTINGS, rule_params, run_views, shared_run_dir
from envisions_flow.workflow.runs import deep_merge, is_replicate, method_of, parse_run_dir, with_replicates

ROOT = Path(__file__).resolve().parents[1]
MISSING = "<missing>"

PIPELINE_RULES = ("explore", "refine", "execute", "pool", "select", "judge", "train", "train_transient", "warmup",
                  "evaluate", "margins", "analysis")
AGENT_RULES = {"ipr": ("agent_source", "agent_evaluate", "ipr_sft", "ipr_explore", "ipr_train"),
               "mixture": ("agent_source", "agent_evaluate", "mixture_indomain", "mixture_synthetic", "mixture_train")}


class Recorder(Mapping):
    """A read-only view of a config block that logs the path of every key read (present or not) and of
    every block whose keys were listed."""

    def __init__(self, data: Mapping[str, Any], log: set, path: tuple = ()):
        self._data, self._log, self._path = data, log, path

    def __getitem__(self, key):
        value = self._data[key]
        if isinstance(value, Mapping):
            return Recorder(value, self._log, (*self._path, key))
        self._log.add(("value", (*self._path, key)))
        return value

    def __contains__(self, key):
        if not isinstance(self._data.get(key), Mapping):
            self._log.add(("value", (*self._path, key)))
        return key in self._data

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __iter__(self):
        self._log.add(("keys", self._path))
        return iter(self._data)

    def __len__(self):
        return len(self._data)


def _config() -> dict:
    """config.yaml's math and web domains with runs that take every branch of the stages' settings: a teacher,
    a warmed-up judge, overrides, replicates, IPR and a mixture."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    del config["domains"]["logic"]
    teacher = {"base_url": "http://localhost:1/v1", "model": "t"}
    config["runs"] = {
        "star": {"method": "star", "domains": ["math"], "overrides": {"replicates": 2}},
        "distill": {"method": "distill", "domains": ["math"], "overrides": {"teacher": teacher}},
        "self_rewarding": {"method": "self_rewarding", "domains": ["math"],
                           "overrides": {"self_rewarding": {"warmup": "warm.jsonl"}}},
        "k2": {"method": "envisions", "domains": ["math"], "overrides": {"explore": {"k": 2}}},
        "turns": {"method": "no_pool", "domains": ["web"], "overrides": {"execution": {"max_turns": 3}}},
        "ipr": {"method": "ipr", "domains": ["web"], "overrides": {"iterations": 2}},
        "mixture_b": {"method": "mixture", "domains": ["web"], "overrides": {"mixture": {"mixture": "b"}}},
    }
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return with_replicates(config)


def _rules_of(config: dict, run: str) -> tuple[str, ...]:
    method = method_of(config, parse_run_dir(run)[1])
    return AGENT_RULES.get(method, PIPELINE_RULES)


def _all_params(config: dict) -> dict[tuple[str, str], Any]:
    return {(rule, run): rule_params(view, rule) for run, view in run_views(config).items()
            for rule in _rules_of(config, run)}


def _reads(config: dict) -> dict[tuple[str, str], set]:
    """The view paths each (rule, run) job's settings object reads."""
    reads = {}
    for run, view in run_views(config).items():
        for rule in _rules_of(config, run):
            log: set = set()
            rule_params(Recorder(view, log), rule)
            reads[(rule, run)] = log
    return reads


def _at(block: Any, path: tuple, kind: str) -> Any:
    for key in path:
        if not isinstance(block, Mapping) or key not in block:
            return MISSING
        block = block[key]
    return sorted(block) if kind == "keys" else block


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, *value[:1]] or ["changed"]
    if isinstance(value, Mapping):
        return {**value, "changed": 1}
    return 1  # None or absent


def _source(config: dict, run: str, path: tuple) -> tuple | None:
    """Where in the config a run's view path is set: the global block, the domain's block (default run) or
    the run's overrides; None where it is not a setting (the run's domain and method)."""
    if path[0] in ("generation", "model"):
        return path
    if path[0] in ("domain", "method"):
        return None
    domain, name = parse_run_dir(run)
    if name == "envisions":
        return ("domains", domain, *path)
    return None if is_replicate(config, name) else ("runs", name, "overrides", *path)


def _set(config: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        config = config.setdefault(key, {})
    config[path[-1]] = value


def test_every_rule_has_its_stage_settings_or_reads_none():
    text = "\n".join(path.read_text() for path in (ROOT / "rules").glob("*.smk")) + (ROOT / "Snakefile").read_text()
    rules = set(re.findall(r"^rule (\w+):", text, re.M)) | set(re.findall(r"^use rule \w+ as (\w+)", text, re.M))
    assert rules == set(RULE_SETTINGS) | set(WITHOUT_SETTINGS) | {"prepare_data", "convert_base_model"}
    for rule in RULE_SETTINGS:  # and the rule's params are that object
        source = next(path for path in (ROOT / "rules").glob("*.smk") if f"rule {rule}:" in path.read_text()
                      or f"as {rule} with" in path.read_text())
        block = source.read_text().split(f"rule {rule}:")[-1].split("\nrule ")[0]
        assert f'stage_params("{rule}")' in block or "use rule train as train_transient" in source.read_text()


def test_changing_any_key_a_stage_reads_changes_its_rules_params_and_no_other():
    config = _config()
    reads, before = _reads(config), _all_params(config)
    views = run_views(config)
    perturbations: dict[tuple, Any] = {}
    for (rule, run), log in reads.items():
        for kind, path in log:
            value = _at(views[run], path, kind)
            source = _source(config, run, path)
            if source is None or (kind == "keys" and value not in ([], MISSING)):
                continue  # a block's keys: its leaves are changed one by one
            perturbations.setdefault(source, _changed({} if kind == "keys" else None if value == MISSING else value))
    assert ("domains", "web", "execution", "max_turns") in perturbations  # the drift issue 20 names
    assert ("generation", "seed") in perturbations and ("runs", "turns", "overrides", "execution", "max_turns") in perturbations
    for source, value in perturbations.items():
        changed = copy.deepcopy(config)
        _set(changed, source, value)
        after, new_views = _all_params(changed), run_views(changed)
        for job, log in reads.items():
            fed = any(_at(views[job[1]], path, kind) != _at(new_views[job[1]], path, kind) for kind, path in log)
            assert (before[job] != after[job]) == fed, (source, job, "fed" if fed else "not fed")
    # the drift issue 20 names: execution.max_turns re-runs explore and refine, and nothing that does not read it
    readers = {rule for (rule, run), log in reads.items() if ("value", ("execution", "max_turns")) in log}
    assert {"explore", "refine", "execute", "evaluate"} <= readers and not readers & {"select", "judge", "warmup",
                                                                                      "ipr_train"}


def test_artifacts_are_shared_exactly_when_their_whole_chain_of_settings_is_equal():
    config = _config()
    config["runs"]["no_l2"] = {"method": "no_l2", "domains": ["math"]}
    config["runs"]["long_refine"] = {"method": "envisions", "domains": ["math"], "overrides": {"refine": {
        "max_new_tokens": 8}}}
    config["runs"]["slow"] = {"method": "star", "domains": ["math"], "overrides": {"execution": {"timeout_s": 9}}}
    views = run_views(config)
    assert shared_run_dir(views, "math/no_l2", "refinements.exec") == "math"  # differs only in training
    assert shared_run_dir(views, "math/long_refine", "samples.exec") == "math"
    assert shared_run_dir(views, "math/long_refine", "refinements") == "math/long_refine"
    assert shared_run_dir(views, "math/star", "eval") == "math"
    assert shared_run_dir(views, "math/star_rep2", "samples") == "math/star_rep2"  # its own seed_offset
    assert shared_run_dir(views, "math/k2", "samples") == "math/k2"
    assert shared_run_dir(views, "math/self_rewarding", "samples") == "math/self_rewarding"  # its warm-up policy
    assert shared_run_dir(views, "math/slow", "samples.exec") == "math/slow"
    assert shared_run_dir(views, "math/slow", "eval") == "math/slow"
    assert shared_run_dir(views, "web/turns", "samples") == "web/turns"  # more turns: other samples
    assert shared_run_dir(views, "web/turns", "eval") == "web/turns"
    # what is shared is what the stage would compute: the producing stage's settings are equal
    for run in views:
        if not parse_run_dir(run)[1].startswith(("ipr", "mixture")):
            source = shared_run_dir(views, run, "samples")
            assert rule_params(views[source], "explore") == rule_params(views[run], "explore")


# ---- end to end: real Snakemake params, recorded by --touch, compared by a dry run ------------------------

TINY = {"domains": {"math": {
    "iterations": 1, "keep_checkpoints": "all",
    "train": {"kind": "generated", "n": 3, "split": "train", "difficulty": "easy", "seed": 1},
    "testsets": {"generated": {"kind": "generated", "n": 3, "split": "test", "seed": 2, "held_in": True},
                 "generated_hard": None},
    "explore": {"k": 2, "max_new_tokens": 48}}},
    "runs": {"star": {"method": "star"}}}
TARGETS = ["results/math/summary.md", "results/math/analysis.parquet", "results/math/star/summary.md"]


def _snakemake(workdir: Path, config: dict, *args: str) -> str:
    (workdir / "test.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "test.yaml", *args],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _fake_results(workdir: Path, summary: str) -> dict[str, str]:
    """Every output of the DAG as a readable placeholder (what the start-up check accepts); file -> rule."""
    rules = {}
    for line in summary.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0].startswith("results/"):
            continue
        path, rules[fields[0]] = workdir / fields[0], fields[2]
        if path.name in ("checkpoint", "base"):
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{}")
            (path / art.WEIGHTS[0]).write_text("")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".parquet":
                pq.write_table(pa.table({"placeholder": [0]}), path)
            else:
                path.write_text("")
    return rules


def _predicted(config: dict, source: tuple, value: Any, in_dag: set[str]) -> set[str]:
    """The rules of the DAG whose settings objects change, by the Python-level resolution."""
    full = deep_merge(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), config)  # as Snakemake merges
    validate(full, str(ROOT / "config" / "schema.yaml"))
    drop_removed_testsets(full)
    changed = copy.deepcopy(full)
    _set(changed, source, value)
    return {rule for run, view in run_views(full).items() for rule in PIPELINE_RULES
            if rule in in_dag and rule_params(view, rule) != rule_params(run_view(changed, run), rule)}


def test_snakemake_reruns_the_rules_whose_stage_reads_the_changed_key(tmp_path: Path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    for name in ("Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, workdir / name)
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config = {**TINY, "domains": {"math": {**base["domains"]["math"], **TINY["domains"]["math"]}}}
    rules = _fake_results(workdir, _snakemake(workdir, config, "--summary", *TARGETS))
    _snakemake(workdir, config, "--touch", "--forceall", *TARGETS)  # records every job's params
    assert "Nothing to be done" in _snakemake(workdir, config, "-n", "--rerun-triggers", "params", "--", *TARGETS)
    for source, value in [(("domains", "math", "execution", "max_turns"), 3),
                          (("domains", "math", "selection", "n1"), 3), (("generation", "seed"), 7)]:
        changed = copy.deepcopy(config)
        _set(changed, source, value)
        dry_run = _snakemake(workdir, changed, "-n", "--rerun-triggers", "params", "--", *TARGETS)
        planned = set(re.findall(r"^rule (\w+):", dry_run, re.M))
        # Snakemake names a job's params as its reason only where no job upstream of it re-runs already
        reported = set(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    reason: Params have changed", dry_run, re.M))
        predicted = _predicted(config, source, value, set(rules.values()))
        assert reported and reported <= predicted <= planned, (source, reported, predicted, planned)
        if source[-1] == "max_turns":
            assert {"explore", "evaluate"} <= reported and {"refine", "execute", "pool"} <= predicted
        if source[-1] == "n1":
            assert reported == predicted == {"select"}

if __name__ == "__main__":
    pytest.main([__file__])
