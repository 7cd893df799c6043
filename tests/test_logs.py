"""Rule logs end with the job's wall and CPU seconds; `stage_times` sums them per rule."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from envisions_flow.workflow.logs import MAX_THREADS, main, rule_job, stage_times

JOB_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", MAX_THREADS)


@pytest.fixture(autouse=True)
def _job_variables_restored():
    """rule_job sets these in the process environment, which later tests' Snakemake runs would inherit."""
    saved = {variable: os.environ.get(variable) for variable in JOB_VARIABLES}
    yield
    for variable, value in saved.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value


def test_a_job_logs_its_time_and_the_breakdown_sums_them_per_rule(tmp_path: Path, capsys):
    logs = tmp_path / "logs"
    (logs / "math" / "iter1").mkdir(parents=True)
    job = SimpleNamespace(threads=1, log=[str(logs / "math" / "iter1" / "explore.log")], rule="explore")
    with rule_job(job):
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:  # 0.2 s of CPU
            pass
    logging.shutdown()
    line = (logs / "math" / "iter1" / "explore.log").read_text().splitlines()[-1]
    assert "rule explore finished in" in line
    (logs / "math" / "iter2").mkdir()
    (logs / "math" / "iter2" / "explore.log").write_text("x: rule explore finished in 10.0 s, 15.5 s of CPU\n")
    (logs / "math" / "iter2" / "train.log").write_text("x: rule train_transient finished in 3.0 s, 5.0 s of CPU\n")
    (logs / "math" / "iter2" / "refine.log").write_text("x: rule refine failed\n")  # unfinished jobs count nothing
    times = stage_times(logs)
    assert set(times) == {"explore", "train_transient"} and times["explore"]["jobs"] == 2
    assert times["explore"]["wall_s"] >= 10.0 and times["explore"]["cpu_s"] >= 15.5 + 0.2
    assert times["train_transient"] == {"jobs": 1, "wall_s": 3.0, "cpu_s": 5.0}
    assert main([str(logs)]) == 0
    assert "| train_transient |" in capsys.readouterr().out


def test_a_failing_job_logs_its_traceback_and_no_time(tmp_path: Path):
    log = tmp_path / "train.log"
    with pytest.raises(RuntimeError), rule_job(SimpleNamespace(threads=1, log=[str(log)], rule="train")):
        raise RuntimeError("boom")
    logging.shutdown()
    text = log.read_text()
    assert "rule train failed" in text and "boom" in text and "finished in" not in text


@pytest.mark.parametrize(("cap", "threads"), [(None, 2), ("1", 1), ("4", 2), ("0", 2), ("", 2)])
def test_a_job_gets_its_rules_threads_at_most_the_environments_cap(cap, threads, monkeypatch, tmp_path: Path):
    import torch

    before = torch.get_num_threads()
    for variable in JOB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what Snakemake exports for a 2-thread job
    if cap is not None:
        monkeypatch.setenv(MAX_THREADS, cap)
    try:
        with rule_job(SimpleNamespace(threads=2, log=[str(tmp_path / "explore.log")], rule="explore")):
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
        logging.shutdown()


def test_a_job_that_imports_torch_later_gets_the_capped_threads_and_one_that_never_does_goes_without(tmp_path):
    """A fresh interpreter, as a Snakemake job is: rule_job leaves torch unimported (1.4 s of CPU saved per job
    that never decodes or trains), and a torch imported inside the job still gets the capped thread count."""
    import subprocess
    import sys

    job = (f"import sys; from types import SimpleNamespace; from envisions_flow.workflow.logs import rule_job\n"
           f"with rule_job(SimpleNamespace(threads=2, log=[{str(tmp_path / 'select.log')!r}], rule='select')):\n"
           f"    print('torch' in sys.modules)\n"
           f"    import torch\n"
           f"    print(torch.get_num_threads())\n")
    environment = {**os.environ, "OMP_NUM_THREADS": "2", MAX_THREADS: "1"}
    out = subprocess.run([sys.executable, "-c", job], env=environment, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1"]
