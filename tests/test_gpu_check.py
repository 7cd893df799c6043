"""benchmarks/gpu_check.py in its dry mode: the GPU checks on CPU with the small model, and the memory plan's
figures against the peak memory they measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow(seconds=50)


def test_the_gpu_check_runs_on_cpu_and_the_plan_matches_what_it_measures(base_model):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--model",
                           str(base_model), "--batch", "2", "--k", "2", "--new-tokens", "8", "--train-batch", "1",
                           "--length", "64"], env=env, capture_output=True, text=True, timeout=2400)
    results = {line["check"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert set(results) == {"sampling", "training_step", "zero3"}
    assert all(result["device"] == "cpu" and result["ok"] for result in results.values())
    sampling, step = results["sampling"], results["training_step"]
    assert sampling["tokens"] > 0 and sampling["logprob_error"] <= 1e-3
    assert step["setup"] == "fp32" and step["checkpoint_dtype"] == "float32" and step["moved_share"] > 0.5
    if "skipped" not in results["zero3"]:
        assert results["zero3"]["setup"] == "fp32, ZeRO-3" and results["zero3"]["moved_share"] > 0.5
    # the plan against the peak resident memory each check measured: an estimate, within a factor any machine meets
    for result in (sampling, step, results["zero3"]):
        if "measured_over_planned" in result:
            assert 0.3 < result["measured_over_planned"] < 2.5, result
