"""The GPU-hours estimate: token upper bounds worked out by hand for a small config, and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from envisions_flow.workflow import gpu_hours as gh
from envisions_flow.workflow.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "domains": {"math": {
        "iterations": 2,
        "train": {"kind": "generated", "n": 10, "split": "train", "seed": 1},
        "testsets": {"generated": {"n": 4}, "generated_hard": {"n": 6}},
        "explore": {"k": 3, "max_new_tokens": 100},
        "refine": {"max_new_tokens": 200},
        "eval": {"max_new_tokens": 50, "self_refine": True},
        "selection": {"n1": 4, "n2": 1},
        "training": {"epochs": 2, "max_length": 64},
    }},
    "runs": {"distill": {"method": "distill", "overrides": {"teacher": {"base_url": "http://x/v1", "model": "m"}}}},
}


def small_config(tmp_path: Path) -> dict:
    import yaml

    overlay = tmp_path / "small.yaml"
    overlay.write_text(yaml.safe_dump(SMALL))
    return gh.load_config([ROOT / "config" / "config.yaml", overlay])


def by_iteration(rows, run):
    return {row.iteration: row for row in rows if row.run == run}


def test_token_upper_bounds_per_stage_and_iteration(tmp_path: Path):
    rows = gh.estimate(small_config(tmp_path), domains=["math"],
                       runs=["envisions", "star", "sft_dpo", "fewshot", "distill"])
    # 10 test rows, each at eval's 50 tokens plus a refine pass of 200 (eval.self_refine)
    evaluation = 10 * (50 + 200)

    envisions = by_iteration(rows, "envisions")
    assert sorted(envisions) == [0, 1, 2]
    assert (envisions[0].explore, envisions[0].train, envisions[0].evaluate) == (0, 0, evaluation)
    for iteration in (1, 2):
        row = envisions[iteration]
        assert row.explore == 10 * 3 * 100 and row.refine == 10 * 3 * 200 and row.evaluate == evaluation
        # U1 <= 10 inputs x N1=4, U2 <= 10 x N2=1 (L2 trains on it too), at max_length 64, 2 epochs
        assert row.train == (40 + 10) * 64 * 2
        assert row.margins == 10 * 2 * 64 and row.judge == 0

    # STaR: no refinement, no pool: at most K=3 positives per input, so U1 <= 10 x 3; no L2
    star = by_iteration(rows, "star")
    assert star[1].refine == 0 and star[1].train == 30 * 64 * 2

    # SFT+DPO: SFT on U1, then DPO on chosen + rejected of each of the 10 pairs (dpo.epochs: training's);
    # the pool holds K candidates after iteration 1 and 2K after iteration 2
    sft_dpo = by_iteration(rows, "sft_dpo")
    assert sft_dpo[1].train == 30 * 64 * 2 + 10 * 2 * 64 * 2
    assert sft_dpo[2].train == 40 * 64 * 2 + 10 * 2 * 64 * 2

    # few-shot: iteration 0 only; distill: the teacher's samples cost no GPU, one answer per input
    assert sorted(by_iteration(rows, "fewshot")) == [0]
    distill = by_iteration(rows, "distill")
    assert sorted(distill) == [0, 1] and distill[1].explore == 0 and distill[1].train == 10 * 64 * 2


def test_gpu_hours_follow_the_stated_throughput():
    row = gh.Row("math", "envisions", 1, explore=2_000_000, refine=1_600_000, train=5_400_000, margins=3_600_000)
    hours = row.gpu_hours(sampling_rate=1000, training_rate=1500, scoring_rate=2000)
    assert hours == pytest.approx({"sampling": 1.0, "training": 1.0, "scoring": 0.5, "total": 2.5})


def test_sizes_the_config_cannot_tell(tmp_path: Path):
    config = small_config(tmp_path)
    config["domains"]["math"]["testsets"]["gsm8k"] = {"preset": "gsm8k", "held_in": True}
    rows = gh.estimate(config, domains=["math"], runs=["envisions"], results=tmp_path / "results")
    assert all("math.gsm8k" in row.unknown for row in rows)
    assert rows[0].evaluate == 10 * 250  # the unknown set is left out, and said so

    sized = gh.estimate(config, sizes=gh.parse_sizes(["math.gsm8k=1319"]), domains=["math"], runs=["envisions"])
    assert sized[0].evaluate == (10 + 1319) * 250 and not sized[0].unknown

    # a prepared data set is counted in its Parquet file
    prepared = tmp_path / "results" / "math" / "data"
    prepared.mkdir(parents=True)
    pd.DataFrame({"id": [str(i) for i in range(7)]}).to_parquet(prepared / "gsm8k.parquet")
    counted = gh.estimate(config, domains=["math"], runs=["envisions"], results=tmp_path / "results")
    assert counted[0].evaluate == (10 + 7) * 250

    with pytest.raises(ConfigError, match="DOMAIN.DATASET=ROWS"):
        gh.parse_sizes(["gsm8k=12"])


def test_the_paper_config_by_hand():
    rows = gh.estimate(gh.load_config([ROOT / "config" / "config.yaml"]), domains=["math"], runs=["envisions"])
    assert len(rows) == 11  # iterations 0..10
    # 2,000 train inputs x K=5 x 2,200 tokens; refine at 4,096; 600 test rows at 2,200 + 4,096 (self-refine)
    assert rows[1].explore == 2000 * 5 * 2200 and rows[1].refine == 2000 * 5 * 4096
    assert rows[0].evaluate == 600 * (2200 + 4096)
    assert rows[1].train == 2000 * (10 + 2) * 2048


def test_cli_prints_a_table_and_labels_upper_bounds(tmp_path: Path, capsys):
    import yaml

    overlay = tmp_path / "small.yaml"
    overlay.write_text(yaml.safe_dump(SMALL))
    code = gh.main(["--base-config", str(ROOT / "config" / "config.yaml"), "--configfile", str(overlay),
                    "--domain", "math", "--run", "envisions", "--sampling-tokens-per-s", "1",
                    "--training-tokens-per-s", "1", "--scoring-tokens-per-s", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^\|\s*math\s*\|\s*envisions\s*\|\s*1\s*\|", out, re.MULTILINE) and "explore ≤" in out
    # sampling: 3 evaluations of 2,500 + 2 x (3,000 + 6,000); training 2 x 6,400, scoring 2 x 1,280 tokens, 1 tok/s
    total = (3 * 2500 + 2 * 9000 + 2 * 6400 + 2 * 1280) / 3600
    assert f"= {total:,.1f} GPU hours" in out and "upper bound" in out

    assert gh.main(["--base-config", str(ROOT / "config" / "config.yaml"), "--size", "oops"]) == 2
