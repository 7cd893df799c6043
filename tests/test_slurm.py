"""The workflow through a real Slurm (one node on loopback, tests/slurm/cluster.py) with profiles/slurm:
every job goes through sbatch and srun, with the profile's per-rule resources, and the artifacts equal
those of a local run of the same config.

Needs root and Debian's `slurm-wlm` and `munge` (`make setup` installs them); skipped without them.
Run it alone with `.venv/bin/pytest -m slurm`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurm.cluster import SlurmCluster, missing_programs
from test_workflow import TINY, TINY_TARGET, _artifact_rows, place_base_model, workflow_copy

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(bool(missing_programs()), reason=f"not installed: {missing_programs()} "
                                                        "(apt-get install slurm-wlm munge, or make setup)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="slurmd starts jobs as their user: it must run as root"),
]

# The local reference is the session's uninterrupted run of test_workflow's TINY config (conftest.py's
# `tiny_run`): 3 inputs, K=2, one iteration on the embedded SmolLM2-135M. It is made before the Slurm run starts,
# never beside it: two runs sampling at once on a 2-core machine slow each other down many times over.
TARGET, CONFIG = TINY_TARGET, TINY
# every job of that run: its rules, each as many times as it runs
JOBS = ["prepare_data"] * 3 + ["explore", "refine", "execute", "execute", "pool", "select", "train", "evaluate"]
# The profile's environment variables, for a node without GPUs: the GPU rules get 0 GPUs (no --gpus),
# 2 cores and 3 GB; the CPU rules keep the profile's own 8000 MB and 240 minutes.
PROFILE_ENV = {"ENVISIONS_SLURM_PARTITION": "envisions-test", "ENVISIONS_SLURM_GPUS": "0",
               "ENVISIONS_SLURM_GPU_CPUS": "2", "ENVISIONS_SLURM_GPU_MEM_MB": "3000"}
GPU_RULES = {"explore", "refine", "train", "evaluate"}
# runtimes the profile gives these rules, as squeue prints a time limit
PROFILE_TIME_LIMITS = {"explore": "12:00:00", "refine": "12:00:00", "train": "12:00:00", "evaluate": "4:00:00",
                       "prepare_data": "4:00:00", "execute": "4:00:00", "pool": "4:00:00", "select": "4:00:00"}


@pytest.mark.xdist_group("tiny_run")  # one worker makes the shared run and runs its readers
@pytest.mark.slow(seconds=155)
@pytest.mark.timeout(1800)
def test_workflow_through_slurm_equals_a_local_run(tmp_path: Path, base_model: Path, tiny_run: Path):
    local, remote = tiny_run, workflow_copy(tmp_path / "slurm")
    place_base_model(base_model, remote)
    (remote / "test.yaml").write_text(yaml.safe_dump(CONFIG))
    # snakemake itself, with status checks at most 0.5 s apart (the plugin backs off by 10 s per idle check)
    command = [sys.executable, str(Path(__file__).parent / "slurm" / "quick_polls.py"), "--profile", "profiles/slurm",
               TARGET, "--configfile", "test.yaml",
               # no accounting here, so no sacct: job states come from squeue (MinJobAge is an hour)
               "--slurm-status-command", "squeue",
               # first status check after 1 s, not 40
               "--slurm-init-seconds-before-status-checks", "1",
               "--slurm-keep-successful-logs"]

    with SlurmCluster() as cluster:
        env = {**cluster.env, **PROFILE_ENV}
        process = subprocess.Popen(command, cwd=remote, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=1500)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        logs = cluster.log_tail()
        assert process.returncode == 0, f"snakemake --profile profiles/slurm failed:\n{output[-6000:]}\n{logs}"
        jobs = cluster.jobs()

    # Every job of the local run went through Slurm once, and finished there.
    local_logs = sorted(path.name.split(".")[0] for path in (local / "results" / "logs").rglob("*.log"))
    assert local_logs == sorted(JOBS)
    slurm_rules = [re.match(r"rule_(\w+?)(_wildcards_|$)", job["comment"]).group(1) for job in jobs]
    assert sorted(slurm_rules) == sorted(JOBS), jobs
    assert {job["state"] for job in jobs} == {"COMPLETED"}, jobs
    assert len(re.findall(r"has been submitted with SLURM jobid \d+", output)) == len(JOBS)
    logs = {path.parent.parent.name for path in (remote / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert logs == {f"rule_{rule}" for rule in JOBS}

    # Each job got the profile's resources: its partition, time limit, memory and cores.
    for rule, job in zip(slurm_rules, jobs):
        assert job["partition"] == "envisions-test"
        assert job["time_limit"] == PROFILE_TIME_LIMITS[rule], (rule, job)
        assert job["memory"] == ("3000M" if rule in GPU_RULES else "8000M"), (rule, job)
        assert job["cpus"] == ("2" if rule in GPU_RULES | {"execute"} else "1"), (rule, job)

    # The same artifacts as the local run, row for row, and the same evaluation and weights.
    ours, theirs = _artifact_rows(remote), _artifact_rows(local)
    assert ours.keys() == theirs.keys() and len(ours) == 11
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name], obj=name)
    assert (remote / TARGET).read_text() == (local / TARGET).read_text()
    weights = "results/math/iter1/checkpoint/model.safetensors"
    assert (remote / weights).read_bytes() == (local / weights).read_bytes()
