"""IPR training on the real SmolLM2-135M: the loss at step 0 is Eq. 10 by hand, only the agent's tokens count."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from my_environments.counter import CounterEnvironment, counter_task
from envisions_flow.methods.agents import Step, Trajectory
from envisions_flow.methods.ipr import contrastive_pairs
from envisions_flow.training.examples import trajectory_example
from envisions_flow.training.ipr_trainer import ipr_examples, train_ipr

pytestmark = pytest.mark.slow

ENV = CounterEnvironment()
SETTINGS = {"epochs": 2, "learning_rate": 1e-4, "lr_scheduler": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0,
            "effective_batch_size": 3, "per_device_batch_size": 3, "max_length": 512, "seed": 0}


def _expert(task_id: str, target: int) -> Trajectory:
    steps = tuple(Step(f"Value: {v}. Target: {target}.", f"{v} is below {target}", "inc", 0.0, False, "")
                  for v in range(target))
    last = Step(f"Value: {target}. Target: {target}.", "on target", "submit", 1.0, True, "")
    return Trajectory(f"{task_id}-expert", counter_task(task_id, 0, target), steps + (last,))


def _row(expert: Trajectory, t: int, agent_actions: tuple[str, ...], expert_step: float, agent_step: float) -> dict:
    """An exploration record whose agent, from the expert's state at t, takes `agent_actions` and fails."""
    value = t - 1
    steps = []
    for i, action in enumerate(agent_actions):
        last = i == len(agent_actions) - 1
        steps.append({"observation": f"Value: {value}. Target: {expert.task.answer}.", "thought": f"try {action}",
                      "action": action, "reward": 0.0, "done": last, "error_class": "wrong_answer" if last else ""})
        value += {"inc": 1, "dec": -1}.get(action, 0)
    return {"task_id": expert.task.id, "episode_id": expert.episode_id, "t": t, "expert_thought": "",
            "expert_action": "", "agent_thought": "", "agent_action": agent_actions[0],
            "expert_step_reward": expert_step, "agent_step_reward": agent_step, "expert_final_reward": 1.0,
            "agent_final_reward": 0.0, "agent_steps": steps}


@pytest.fixture(scope="module")
def pairs():
    """Two outcome pairs and one step pair, as contrastive_pairs builds them."""
    two, one = _expert("c", 2), _expert("d", 1)
    rows = [_row(two, 1, ("submit",), 0.6, 0.0), _row(two, 2, ("submit",), 1.0, 0.0),
            _row(one, 1, ("dec", "submit"), 1.0, 0.0)]
    built = contrastive_pairs(ENV, rows, [two, one], tau=0.1)
    assert [pair["kind"] for pair in built] == ["outcome", "step", "outcome"]
    return built


def _chosen_logp(model, tokenizer, pair) -> float:
    """log π(chosen | prompt) summed over the agent's tokens, computed directly."""
    encoded = trajectory_example(tokenizer, pair["prompt"] + pair["chosen"], len(pair["prompt"]))
    ids = torch.tensor([encoded["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    return sum(logps[i - 1, ids[0, i]].item() for i, m in enumerate(encoded["assistant_masks"]) if m)


def test_masks_keep_only_the_agent_turns_after_the_prompt(base_model, pairs):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    step = pairs[1]
    encoded = trajectory_example(tokenizer, step["prompt"] + step["chosen"], len(step["prompt"]))
    trained = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m])
    assert "Thought: 1 is below 2\nAction: inc" in trained and "Thought: on target\nAction: submit" in trained
    assert "Observation" not in trained and "Value: 2" not in trained  # the environment's turn in between
    assert "0 is below 2" not in trained  # the expert prefix e_{t-1} belongs to the prompt
    examples, dropped = ipr_examples(tokenizer, pairs, 512)
    assert dropped == 0 and examples[1]["chosen_assistant_masks"] == encoded["assistant_masks"]
    shortest = min(len(trajectory_example(tokenizer, pair["prompt"])["input_ids"]) for pair in pairs)
    assert ipr_examples(tokenizer, pairs, shortest) == ([], 3)  # cut before any agent token


def test_train_ipr_starts_at_the_hand_formula_and_saves_a_checkpoint(base_model, pairs, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)  # as training computes on a CPU
    nll = [-_chosen_logp(model, tokenizer, pair) for pair in pairs if pair["kind"] == "outcome"]
    # policy == reference: both DPO terms are -log σ(0) = log 2; SFT is the mean NLL of the outcome winners
    expected = math.log(2) + math.log(2) + sum(nll) / len(nll)

    metrics = train_ipr(base_model, base_model, pairs, SETTINGS, tmp_path / "checkpoint", beta=0.1)
    first, second = metrics["ipr"]["log"]
    assert first["loss"] == pytest.approx(expected, abs=2e-3)
    assert first["o_dpo"] == pytest.approx(math.log(2), abs=1e-3)
    assert first["s_dpo"] == pytest.approx(math.log(2), abs=1e-3)
    assert first["sft"] == pytest.approx(sum(nll) / len(nll), abs=2e-3)
    assert second["loss"] < first["loss"]
    assert metrics["ipr"]["global_step"] == 2
    assert (metrics["outcome_pairs"], metrics["step_pairs"], metrics["dropped_pairs"]) == (2, 1, 0)

    saved = json.loads((tmp_path / "checkpoint" / "training.json").read_text())
    assert saved["ipr"]["train_loss"] == pytest.approx(metrics["ipr"]["train_loss"])
    assert saved["reference_model"] == str(base_model) and saved["sft_on"] == "outcome_winners"
    assert not (tmp_path / "checkpoint.partial").exists() and not (tmp_path / "checkpoint" / "trainer").exists()
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint")
    assert -_chosen_logp(trained, tokenizer, pairs[0]) < nll[0]  # the winner became more likely


def test_sft_on_all_chosen_averages_over_every_pair(base_model, pairs, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    nll = [-_chosen_logp(model, tokenizer, pair) for pair in pairs]
    metrics = train_ipr(base_model, base_model, pairs, {**SETTINGS, "epochs": 1}, tmp_path / "checkpoint",
                        beta=0.1, sft_on="all_chosen")
    [first] = metrics["ipr"]["log"]
    assert first["sft"] == pytest.approx(sum(nll) / 3, abs=2e-3)
    assert first["loss"] == pytest.approx(2 * math.log(2) + sum(nll) / 3, abs=2e-3)
