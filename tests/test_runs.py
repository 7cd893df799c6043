"""Named runs: method strategies, settings merging, artifact sharing and the analysis metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from envisions_flow.methods.analysis import correct_unique, exploration_metrics
from envisions_flow.methods.selection import (
    filter_trajectories,
    preference_pairs,
    select_training_sets,
)
from envisions_flow.stages.analysis import analyze
from envisions_flow.stages.select import build_pool
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.config import ConfigError
from envisions_flow.workflow.dag import run_views, shared_run_dir
from envisions_flow.workflow.runs import (
    DEFAULT_RUN,
    ENVISIONS,
    METHODS,
    check_runs,
    is_replicate,
    method_strategy,
    parse_run_dir,
    replicates_of,
    run_dir,
    run_settings,
    runs_of,
    training_plan,
    with_replicates,
)

ROOT = Path(__file__).resolve().parents[1]


def _config(runs: dict) -> dict:
    domain = {"iterations": 3, "train": {"kind": "generated"}, "testsets": {"t": {"kind": "generated"}},
              "explore": {"k": 5, "max_new_tokens": 64, "few_shot_iterations": 1}, "refine": {"max_new_tokens": 64},
              "eval": {"max_new_tokens": 64, "self_refine": False}, "execution": {"timeout_s": 2},
              "selection": {"n1": 10, "n2": 2, "u1_rule": "authors"}, "training": {}}
    return {"domains": {"math": domain, "logic": dict(domain)}, "runs": runs}


def test_methods_differ_from_envisions_only_where_the_paper_says():
    assert method_strategy("envisions") == ENVISIONS
    assert method_strategy("star") == {**ENVISIONS, "refine": False, "pool": False, "ranking": "random", "l2": False}
    assert method_strategy("sft_dpo") == {**ENVISIONS, "refine": False, "l2": False, "dpo": True, "init": "previous"}
    assert method_strategy("eto")["sft"] == "first" and method_strategy("eto")["dpo"]
    assert method_strategy("no_refine") == {**ENVISIONS, "refine": False, "l2": False}
    assert method_strategy("no_self_reward") == {**ENVISIONS, "ranking": "random"}
    assert method_strategy("no_pool") == {**ENVISIONS, "pool": False}
    assert method_strategy("no_l2") == {**ENVISIONS, "l2": False}
    with pytest.raises(ConfigError, match="method 'rlhf' is not implemented"):
        method_strategy("rlhf")


def test_schema_lists_exactly_the_implemented_methods():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert set(schema["$defs"]["run"]["properties"]["method"]["enum"]) == set(METHODS)


def test_overrides_are_merged_into_the_method_preset():
    config = _config({"k10": {"method": "envisions", "overrides": {"explore": {"k": 10}}},
                      "continual": {"method": "envisions", "overrides": {"strategy": {"init": "previous"}}},
                      "fewshot": {"method": "fewshot", "domains": ["math"]}})
    k10 = run_settings(config, "math", "k10")
    assert k10["explore"] == {"k": 10, "max_new_tokens": 64, "few_shot_iterations": 1}
    assert config["domains"]["math"]["explore"]["k"] == 5  # the domain block itself is untouched
    assert run_settings(config, "math", "continual")["strategy"] == {**ENVISIONS, "init": "previous"}
    assert run_settings(config, "math", "fewshot")["iterations"] == 0
    assert runs_of(config, "math") == [DEFAULT_RUN, "k10", "continual", "fewshot"]
    assert runs_of(config, "logic") == [DEFAULT_RUN, "k10", "continual"]
    assert run_dir("math", DEFAULT_RUN) == "math" and run_dir("math", "k10") == "math/k10"
    assert parse_run_dir("math") == ("math", DEFAULT_RUN) and parse_run_dir("math/k10") == ("math", "k10")


def test_bad_overrides_are_named():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    config = _config({"k_bad": {"method": "envisions", "overrides": {"explore": {"k": 0}}}})
    with pytest.raises(ConfigError, match=r"runs\.k_bad\.overrides\.explore\.k: 0 is less than the minimum of 1"):
        check_runs(config, schema)
    config = _config({"odd": {"method": "star", "domains": ["web"]}})
    with pytest.raises(ConfigError, match=r"runs\.odd\.domains: \['web'\] are not configured"):
        check_runs(config, schema)


def test_artifacts_are_shared_only_between_runs_with_equal_settings():
    config = _config({"star": {"method": "star"}, "no_l2": {"method": "no_l2"},
                      "k10": {"method": "envisions", "overrides": {"explore": {"k": 10}}},
                      "k10_star": {"method": "star", "overrides": {"explore": {"k": 10}}},
                      "refined_eval": {"method": "envisions", "overrides": {"eval": {"self_refine": True}}}})
    views = run_views(config)
    assert shared_run_dir(views, "math/star", "samples") == "math"
    assert shared_run_dir(views, "math/k10", "samples") == "math/k10"
    assert shared_run_dir(views, "math/k10_star", "samples.exec") == "math/k10"
    assert shared_run_dir(views, "math/no_l2", "refinements") == "math"
    assert shared_run_dir(views, "math/star", "eval") == "math"
    assert shared_run_dir(views, "math/refined_eval", "eval") == "math/refined_eval"


def test_replicates_are_runs_of_their_own_that_move_every_seed():
    config = _config({"star": {"method": "star", "domains": ["math"]}, "fewshot": {"method": "fewshot"},
                      "k10": {"method": "envisions", "overrides": {"explore": {"k": 10}, "replicates": 2}}})
    config["domains"]["math"]["replicates"] = 3
    config["domains"]["math"]["training"] = {"seed": 5}
    config["default_runs"] = ["envisions", "star", "fewshot"]
    expanded = with_replicates(config)
    assert config["runs"].keys() == {"star", "fewshot", "k10"}  # the config itself is left as it was
    assert replicates_of(expanded, "math", "envisions") == ["envisions", "envisions_rep2", "envisions_rep3"]
    assert replicates_of(expanded, "math", "k10") == ["k10", "k10_rep2"]  # a run's own count wins
    assert replicates_of(expanded, "logic", "envisions") == ["envisions"] and "envisions_rep2" not in runs_of(
        expanded, "logic")
    assert replicates_of(expanded, "math", "fewshot") == ["fewshot"]  # nothing random to replicate
    assert expanded["default_runs"] == ["envisions", "star", "fewshot", "envisions_rep2", "envisions_rep3",
                                        "star_rep2", "star_rep3"]
    third = run_settings(expanded, "math", "star_rep3")
    assert third["seed_offset"] == 2 and third["training"]["seed"] == 7
    assert third["strategy"] == run_settings(expanded, "math", "star")["strategy"] and is_replicate(expanded, "star_rep3")
    # a replicate explores its own samples: iteration 1 is shared with equal seeds only
    views = run_views(expanded)
    assert shared_run_dir(views, "math/star_rep2", "samples") == "math/envisions_rep2"
    assert shared_run_dir(views, "math/envisions_rep2", "samples") == "math/envisions_rep2"
    config["runs"]["ipr"] = {"method": "ipr", "domains": ["math"]}
    with pytest.raises(ConfigError, match="agent runs .* are not replicated"):
        with_replicates(config)


def _pool(rows):
    frame = pd.DataFrame(rows, columns=["id", "program", "b", "self_reward"])
    frame["question"], frame["answer"], frame["origin"], frame["iteration"], frame["sample_idx"] = "Q", "1", "explore", 1, 0
    frame["program_key"] = frame["program"]
    return frame


POOL = _pool([("x", "p1", 1, -0.1), ("x", "p2", 1, -0.2), ("x", "p3", 1, -0.3), ("x", "p4", 1, -0.4),
              ("x", "n1", 0, -0.15), ("x", "n2", 0, -0.25), ("y", "q1", 1, -0.5), ("y", "m1", 0, -0.1)])


def test_random_ranking_ignores_self_reward_but_is_seeded():
    by_reward, _ = select_training_sets(POOL, n1=2, n2=0, rule="paper")
    assert by_reward[by_reward["id"] == "x"]["positive"].tolist() == ["p1", "p2"]
    draws = {tuple(select_training_sets(POOL, 2, 0, "paper", "random", seed)[0]["positive"]) for seed in range(20)}
    assert len(draws) > 1  # the order is not the self-reward's
    first = select_training_sets(POOL, 2, 0, "paper", "random", 7)[0]
    assert first.equals(select_training_sets(POOL, 2, 0, "paper", "random", 7)[0])
    with pytest.raises(ValueError, match="strategy.ranking"):
        select_training_sets(POOL, 2, 0, "paper", "best")


def test_dpo_pairs_take_the_best_positive_even_when_it_is_in_u1():
    pairs = preference_pairs(POOL, n2=2)
    assert pairs[["id", "positive", "negative"]].values.tolist() == [
        ["x", "p1", "n1"], ["x", "p2", "n2"], ["y", "q1", "m1"]]
    # Eq. 5 (authors' rule, N1=10) pairs only the positives left after U1: x keeps one, y none
    _, u2 = select_training_sets(POOL, n1=10, n2=2)
    assert u2[["id", "positive", "negative"]].values.tolist() == [["x", "p4", "n1"]]


def test_without_refinement_every_explored_trajectory_is_kept():
    explored = pd.DataFrame({"id": ["x", "x"], "sample_idx": [0, 1], "question": "Q", "answer": "1",
                             "program": ["a", "b"], "b": [0, 1], "self_reward": [-0.2, -0.9]})
    chosen = filter_trajectories(explored, None, iteration=2)
    assert chosen["program"].tolist() == ["a", "b"] and chosen["b"].tolist() == [0, 1]
    assert chosen["self_reward"].tolist() == [-0.2, -0.9] and set(chosen["origin"]) == {"explore"}


def test_exploration_and_stability_match_the_worked_example_of_appendix_b():
    first = {f"q{i}" for i in range(1000)}
    second = {f"q{i}" for i in range(200, 1000)} | {f"q{i}" for i in range(1000, 1400)}
    assert len(second) == 1200
    metrics = exploration_metrics({1: first, 2: second}).set_index("iteration")
    assert metrics.loc[2, "exploratory_ability"] == pytest.approx(0.4)
    assert metrics.loc[2, "stability"] == pytest.approx(0.8)
    assert metrics.loc[2, "newly_solved"] == 400 and metrics.loc[1, "solved"] == 1000
    assert math.isnan(metrics.loc[1, "exploratory_ability"])


def test_exploration_metrics_accumulate_over_iterations():
    metrics = exploration_metrics({1: {"a", "b"}, 2: {"a", "c"}, 3: {"d"}}).set_index("iteration")
    # iteration 2: earlier {a, b}: new {c} -> 1/2, kept {a} -> 1/2; iteration 3: earlier {a, b, c}: new {d} -> 1/3
    assert metrics.loc[3, "exploratory_ability_cumulative"] == pytest.approx(1 / 2 + 1 / 3)
    assert metrics.loc[3, "stability_cumulative"] == pytest.approx(1 / 2)


def test_correct_unique_counts_distinct_correct_programs_per_input():
    pool = _pool([("x", "p1", 1, -0.1), ("x", "p1", 1, -0.2), ("y", "p1", 1, -0.3), ("y", "n", 0, -0.1)])
    assert correct_unique(pool) == 2


def test_teacher_and_judge_methods():
    assert method_strategy("distill") == {**ENVISIONS, "refine": False, "pool": False, "l2": False,
                                          "explorer": "teacher"}
    assert method_strategy("self_rewarding") == {**ENVISIONS, "refine": False, "pool": False, "l2": False,
                                                 "sft": "never", "dpo": True, "init": "previous", "labels": "judge"}
    config = _config({"distill": {"method": "distill"}})
    assert run_settings(config, "math", "distill")["iterations"] == 1
    assert run_settings(config, "math", "distill")["explore"]["k"] == 1
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    with pytest.raises(ConfigError, match=r"runs\.distill\.overrides\.teacher\.base_url: a teacher run needs"):
        check_runs(config, schema)


def test_a_warmed_up_judge_run_does_not_share_the_base_models_samples():
    config = _config({"sr": {"method": "self_rewarding"},
                      "sr_warm": {"method": "self_rewarding", "overrides": {"self_rewarding": {"warmup": "oa.jsonl"}}}})
    views = run_views(config)
    assert shared_run_dir(views, "math/sr", "samples") == "math"
    assert shared_run_dir(views, "math/sr_warm", "samples") == "math/sr_warm"


@pytest.mark.parametrize(("method", "iteration", "plan"), [
    ("envisions", 3, {"sft": True, "l2": True, "dpo": False}),
    ("no_l2", 3, {"sft": True, "l2": False, "dpo": False}),
    ("star", 1, {"sft": True, "l2": False, "dpo": False}),
    ("sft_dpo", 2, {"sft": True, "l2": False, "dpo": True}),
    ("eto", 1, {"sft": True, "l2": False, "dpo": True}),  # behaviour cloning once ...
    ("eto", 2, {"sft": False, "l2": False, "dpo": True}),  # ... then DPO only
    ("self_rewarding", 1, {"sft": False, "l2": False, "dpo": True}),
])
def test_each_method_trains_with_its_own_losses(method, iteration, plan):
    assert training_plan(method_strategy(method), iteration) == plan


def _write_iteration(directory, explored_rows, refined_rows):
    def generations(rows):
        return [{"id": i, "sample_idx": k, "question": "Q", "answer": "1", "prompt": "p", "completion": prog,
                 "program": prog, "n_tokens": 3, "logprob_sum": -3 * r, "self_reward": -r, "source_program": ""}
                for i, k, prog, _, r in rows]

    def executions(rows):
        return [{"id": i, "sample_idx": k, "b": b, "value": None, "error_class": "" if b else "wrong_answer",
                 "duration_s": 0.0} for i, k, _, b, _ in rows]

    paths = {}
    for name, rows in (("samples", explored_rows), ("refinements", refined_rows)):
        art.write_table(generations(rows), directory / f"{name}.parquet", art.GENERATIONS)
        art.write_table(executions(rows), directory / f"{name}.exec.parquet", art.EXECUTIONS)
        paths[name] = str(directory / f"{name}.parquet")
        paths[f"{name}_exec"] = str(directory / f"{name}.exec.parquet")
    return paths


@pytest.mark.parametrize(("run", "programs"), [
    # ENVISIONS: the previous pool plus the better of (a, ã) per sample
    ("envisions", {"return 1", "return 1 + 0", "return 2"}),
    # w/o long-term memory: this iteration only
    ("no_pool", {"return 1 + 0", "return 2"}),
    # w/o self-refine: the explored samples only, on top of the pool
    ("no_refine", {"return 1", "return 3", "return 2"}),
])
def test_what_enters_the_pool_depends_on_the_method(tmp_path, run, programs):

    config = _config({"no_pool": {"method": "no_pool"}, "no_refine": {"method": "no_refine"}})
    config["domains"]["math"]["execution"].update({"memory_mb": 512, "workers": 1})
    previous = tmp_path / "previous.parquet"
    art.write_table([{"id": "x", "question": "Q", "answer": "1", "program": "return 1", "program_key": "return 1",
                      "b": 1, "self_reward": -0.1, "origin": "explore", "iteration": 1, "sample_idx": 0}],
                    previous, art.POOL)
    # sample 0: a wrong explored program, refined into a correct one; sample 1: a wrong one kept wrong
    paths = _write_iteration(tmp_path, [("x", 0, "return 3", 0, 0.5), ("x", 1, "return 2", 0, 0.2)],
                             [("x", 0, "return 1 + 0", 1, 0.4), ("x", 1, "return 4", 0, 0.9)])
    out = tmp_path / "pool.parquet"
    build_pool(config, run_dir("math", run), 2, str(previous), paths["samples"], paths["samples_exec"],
               paths["refinements"], paths["refinements_exec"], str(out))
    assert set(art.read_table(out, art.POOL)["program"]) == programs


def _write_analysis_inputs(root, iteration: int, solved_ids: list[str], failed_ids: list[str]) -> tuple[str, str, str, str]:
    """Hand-made artifacts of one iteration: eval.json, execution results, a pool, no pairs."""
    folder = root / f"iter{iteration}"
    folder.mkdir()
    ids = solved_ids + failed_ids
    art.write_json({"testsets": {"t": {"accuracy": 0.5, "n": 2, "correct": 1}}, "average": 0.5}, folder / "eval.json")
    art.write_table([{"testset": "t", "id": f"t-{i}", "question": "", "answer": "", "completion": "", "program": "",
                      "value": "", "b": i, "error_class": "", "refined_program": None, "refined_b": None}
                     for i in (0, 1)], folder / "eval.parquet", art.EVAL)
    art.write_table([{"id": i, "sample_idx": 0, "b": int(i in solved_ids), "value": None, "error_class": "",
                      "duration_s": 0.1} for i in ids], folder / "samples.exec.parquet", art.EXECUTIONS)
    art.write_table([{"id": i, "question": "q", "answer": i.split(":")[0], "program": f"p{i}", "program_key": f"p{i}",
                      "b": int(i in solved_ids), "self_reward": -0.1, "origin": "explore", "iteration": iteration,
                      "sample_idx": 0} for i in ids], folder / "pool.parquet", art.POOL)
    art.write_table([], folder / "margins.parquet", art.MARGINS)
    return tuple(str(folder / name) for name in ("eval.json", "samples.exec.parquet", "pool.parquet",
                                                  "margins.parquet"))


@pytest.mark.parametrize("domain", ["web", "math"])
def test_web_exploration_metrics_count_miniwob_tasks_not_fresh_episodes(tmp_path, domain):
    # iteration 2 explores new seeds: click-button is solved again (stable), enter-text for the first time
    first = _write_analysis_inputs(tmp_path, 1, ["click-button:1", "click-link:2"], ["enter-text:3"])
    second = _write_analysis_inputs(tmp_path, 2, ["click-button:11", "enter-text:13"], ["click-link:12"])
    out = tmp_path / "analysis.parquet"
    execution = {"timeout_s": 2, "memory_mb": 512, "workers": 1}
    config = {"runs": {}, "domains": {domain: {"train": {}, "testsets": {}, "execution": execution}}}
    analyze(config, domain, [first[0], second[0]], [first[1], second[1]], [first[2], second[2]], [first[3], second[3]],
            str(out))
    row = art.read_table(out, art.ANALYSIS).set_index("iteration").loc[2]
    # 1 of 2 test items right: Wilson's 95% interval (tests/test_intervals.py)
    assert (row["average_accuracy_low"], row["average_accuracy_high"]) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    if domain == "web":
        assert (row["solved"], row["newly_solved"]) == (2, 1)
        assert row["exploratory_ability"] == pytest.approx(1 / 2) and row["stability"] == pytest.approx(1 / 2)
    else:  # other domains count inputs: no input id repeats, so nothing is stable
        assert (row["solved"], row["newly_solved"], row["stability"]) == (2, 2, 0)
