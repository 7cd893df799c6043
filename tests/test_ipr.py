"""IPR without a model: Monte Carlo step rewards with known values, the pair rule at τ, the losses by hand."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import pytest
import torch

from my_environments.counter import CounterEnvironment, counter_task
from envisions_flow.generation.base import Generation
from envisions_flow.methods.agents import Step, Trajectory, render_step
from envisions_flow.methods.ipr import (
    Candidate,
    contrastive_pairs,
    dpo_loss,
    explore_expert,
    loss_weights,
    mean_step_rewards,
    messages_from_cell,
    mixture_loss,
    step_rewards,
)
from envisions_flow.workflow.artifacts import IPR_PAIRS, IPR_STEPS, read_table, write_table

ENV = CounterEnvironment()
N = 5


def _state(prompt: str) -> tuple[int, int]:
    """The counter and target of the last observation in a prompt."""
    value, target = re.findall(r"Value: (-?\d+)\. Target: (-?\d+)\.", prompt)[-1]
    return int(value), int(target)


def _towards(value: int, target: int) -> str:
    return "submit" if value == target else ("inc" if value < target else "dec")


class StratifiedScorer:
    """A temperature-1 scorer whose samples are stratified: of the copies of one prompt in a batch,
    the first `good` move towards the target and submit there, the others submit at once.

    The N continuations of a candidate are N copies of its prompt, so exactly good/N of them
    play well; the survivors stay identical copies and keep playing well. It records the size
    of every batch it is asked for.
    """

    def __init__(self, good: int):
        self.good, self.batches = good, []

    def render(self, messages):
        return "\n".join(message["content"] for message in messages)

    def sample(self, prompts, n, max_new_tokens, seed):
        self.batches.append(len(prompts))
        seen: Counter[str] = Counter()
        out = []
        for prompt in prompts:
            value, target = _state(prompt)
            action = _towards(value, target) if seen[prompt] < self.good else "submit"
            seen[prompt] += 1
            out.append([Generation(render_step(f"scorer at {value}", action), (1,), -1.0)] * n)
        return out

    def greedy(self, prompts, max_new_tokens):
        raise AssertionError("the scorer samples at temperature 1")


class WanderingAgent:
    """A greedy agent that steps away from the target at 0 and submits one short of it."""

    def render(self, messages):
        return "\n".join(message["content"] for message in messages)

    def greedy(self, prompts, max_new_tokens):
        out = []
        for prompt in prompts:
            value, target = _state(prompt)
            action = "dec" if value == 0 else ("submit" if value >= target - 1 else "inc")
            out.append(Generation(render_step(f"agent at {value}", action), (1,), -1.0))
        return out

    def sample(self, prompts, n, max_new_tokens, seed):
        raise AssertionError("the agent acts at temperature 0")


def _expert(task_id: str = "c", target: int = 2) -> Trajectory:
    """Value 0 to `target` by inc steps, then submit: reward 1."""
    task = counter_task(task_id, 0, target)
    steps = tuple(Step(f"Value: {v}. Target: {target}.", f"expert at {v}", "inc", 0.0, False, "")
                  for v in range(target))
    return Trajectory(f"{task_id}-expert", task, steps + (Step(f"Value: {target}. Target: {target}.",
                                                               "done", "submit", 1.0, True, ""),))


def _rewards(candidates, scorer, max_steps=10):
    return step_rewards(ENV, scorer, candidates, n_rollouts=N, max_steps=max_steps, max_new_tokens=16)


@pytest.mark.parametrize("good", [0, 2, 3, 5])
def test_step_reward_is_the_mean_final_reward_of_the_scorer_rollouts(good):
    task = counter_task("c", 0, 2)
    assert _rewards([Candidate(task, (), task.question, "up", "inc")], StratifiedScorer(good)) == [good / N]


def test_an_action_that_ends_the_episode_gets_the_environment_reward_without_rollouts():
    scorer = StratifiedScorer(3)
    done = counter_task("d", 2, 2)
    open_task = counter_task("c", 0, 2)
    candidates = [Candidate(done, (), done.question, "right", "submit"),      # reward 1 at once
                  Candidate(open_task, (), open_task.question, "early", "submit"),  # wrong answer: 0
                  Candidate(open_task, (), open_task.question, "?", "dance"),      # invalid action: 0
                  Candidate(open_task, (), open_task.question, "babble", ""),      # unparsable: 0
                  Candidate(open_task, (), open_task.question, "up", "inc")]
    assert _rewards(candidates, scorer) == [1.0, 0.0, 0.0, 0.0, 0.6]
    assert scorer.batches[0] == N  # only the open candidate was continued, all in one batch


def test_rollouts_count_the_prefix_against_the_step_limit():
    task = counter_task("c", 0, 2)
    away = [Candidate(task, (), task.question, "down", "dec")]  # needs inc, inc, inc, submit after it
    assert _rewards(away, StratifiedScorer(3), max_steps=5) == [0.6]
    assert _rewards(away, StratifiedScorer(3), max_steps=4) == [0.0]
    prefix = (Step(task.question, "up", "inc", 0.0, False, ""),)
    last = [Candidate(task, prefix, "Value: 1. Target: 2.", "up", "inc")]
    scorer = StratifiedScorer(5)
    assert _rewards(last, scorer, max_steps=2) == [0.0] and scorer.batches == []  # its last allowed step


def test_all_candidates_go_in_one_batch_and_repeated_actions_share_an_estimate():
    scorer = StratifiedScorer(3)
    a, b = counter_task("a", 0, 2), counter_task("b", 0, 1)
    candidates = [Candidate(a, (), a.question, "up", "inc"), Candidate(b, (), b.question, "up", "inc"),
                  Candidate(a, (), a.question, "another thought, same action", "inc"),
                  Candidate(b, (), b.question, "down", "dec")]
    assert _rewards(candidates, scorer) == [0.6, 1.0, 0.6, 0.6]
    assert scorer.batches[0] == 3 * N  # three distinct open candidates, N continuations each, one call


def test_mean_step_reward_of_a_trajectory_averages_its_own_actions():
    expert = _expert()
    # inc from 0: 3/5; inc from 1: the scorer submits at 2 either way, 1.0; submit at 2: 1.0
    [mean] = mean_step_rewards(ENV, StratifiedScorer(3), [expert], n_rollouts=N, max_steps=10, max_new_tokens=16)
    assert mean == pytest.approx((0.6 + 1.0 + 1.0) / 3)


def test_explore_expert_compares_expert_and_agent_actions_at_every_step(tmp_path):
    expert = _expert()
    rows = explore_expert(ENV, WanderingAgent(), StratifiedScorer(3), [expert], n_rollouts=N, max_steps=4,
                          max_new_tokens=16)
    assert [r["t"] for r in rows] == [1, 2, 3]
    assert [(r["expert_action"], r["agent_action"]) for r in rows] == [("inc", "dec"), ("inc", "submit"),
                                                                       ("submit", "submit")]
    # t=1: expert inc leaves 2 steps of 4 (3/5 of rollouts succeed); agent dec needs 5 steps in all: 0
    # t=2: expert inc reaches the target (every rollout submits there); agent submits at 1: 0
    # t=3: both submit at the target: 1
    assert [(r["expert_step_reward"], r["agent_step_reward"]) for r in rows] == [(0.6, 0.0), (1.0, 0.0), (1.0, 1.0)]
    assert [r["agent_final_reward"] for r in rows] == [0.0, 0.0, 1.0]
    assert all(r["expert_final_reward"] == 1.0 for r in rows)
    # from scratch the agent wanders dec, inc, dec, inc into the step limit
    assert [s["action"] for s in rows[0]["agent_steps"]] == ["dec", "inc", "dec", "inc"]
    assert rows[0]["agent_steps"][-1]["error_class"] == "step_limit"
    assert [s["observation"] for s in rows[1]["agent_steps"]] == ["Value: 1. Target: 2."]
    write_table(rows, tmp_path / "steps.parquet", IPR_STEPS)
    stored = read_table(tmp_path / "steps.parquet", IPR_STEPS)
    pairs = contrastive_pairs(ENV, stored, [expert], tau=0.5)
    assert [(p["kind"], p["t"]) for p in pairs] == [("outcome", 1), ("step", 2)]
    assert pairs == contrastive_pairs(ENV, rows, [expert], tau=0.5)
    write_table(pairs, tmp_path / "pairs.parquet", IPR_PAIRS)
    back = read_table(tmp_path / "pairs.parquet", IPR_PAIRS).to_dict("records")
    assert [messages_from_cell(back[1][key]) for key in ("prompt", "chosen", "rejected")] == \
        [pairs[1]["prompt"], pairs[1]["chosen"], pairs[1]["rejected"]]


def _row(t: int, expert_step: float, agent_step: float, expert_final: float, agent_final: float,
         agent_actions=("submit",)) -> dict:
    value = t - 1
    agent_steps = [{"observation": f"Value: {value}. Target: 2.", "thought": "agent", "action": action,
                    "reward": agent_final if i == len(agent_actions) - 1 else 0.0,
                    "done": i == len(agent_actions) - 1, "error_class": ""} for i, action in enumerate(agent_actions)]
    return {"task_id": "c", "episode_id": "c-expert", "t": t, "expert_thought": "", "expert_action": "",
            "agent_thought": "agent", "agent_action": agent_actions[0], "expert_step_reward": expert_step,
            "agent_step_reward": agent_step, "expert_final_reward": expert_final, "agent_final_reward": agent_final,
            "agent_steps": agent_steps}


def _pairs(rows, tau, both_directions=False):
    return contrastive_pairs(ENV, rows, [_expert()], tau=tau, both_directions=both_directions)


def test_a_step_pair_needs_a_step_reward_margin_strictly_above_tau():
    assert _pairs([_row(2, 0.75, 0.25, 1.0, 0.0)], tau=0.5) == []           # margin exactly τ
    assert len(_pairs([_row(2, 0.75 + 1e-6, 0.25, 1.0, 0.0)], tau=0.5)) == 1  # τ + ε
    assert _pairs([_row(2, 0.8, 0.6, 1.0, 0.0)], tau=0.2) == []             # 0.8 - 0.6 > 0.2 in floats
    assert len(_pairs([_row(2, 0.8, 0.6, 1.0, 0.0)], tau=0.19)) == 1


def test_a_step_pair_needs_the_agent_to_end_below_the_expert():
    assert _pairs([_row(2, 1.0, 0.0, 1.0, 1.0)], tau=0.1) == []
    assert _pairs([_row(2, 1.0, 0.0, 0.5, 0.75)], tau=0.1) == []
    assert len(_pairs([_row(2, 1.0, 0.0, 1.0, 0.75)], tau=0.1)) == 1


def test_step_pair_contrasts_the_suffixes_after_the_expert_prefix():
    [pair] = _pairs([_row(2, 1.0, 0.0, 1.0, 0.0)], tau=0.1)
    assert pair["kind"] == "step" and pair["t"] == 2
    assert [m["role"] for m in pair["prompt"]] == ["user", "assistant", "user"]
    assert pair["prompt"][1]["content"] == "Thought: expert at 0\nAction: inc"
    assert pair["prompt"][2]["content"] == "Observation:\nValue: 1. Target: 2."
    assert pair["chosen"] == [{"role": "assistant", "content": "Thought: expert at 1\nAction: inc"},
                              {"role": "user", "content": "Observation:\nValue: 2. Target: 2."},
                              {"role": "assistant", "content": "Thought: done\nAction: submit"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Thought: agent\nAction: submit"}]
    assert (pair["chosen_final_reward"], pair["rejected_final_reward"]) == (1.0, 0.0)


def test_outcome_pairs_compare_whole_episodes_whatever_the_step_rewards():
    [pair] = _pairs([_row(1, 0.5, 0.5, 1.0, 0.0)], tau=0.5)
    assert pair["kind"] == "outcome" and len(pair["prompt"]) == 1
    assert pair["prompt"][0]["content"].endswith("Value: 0. Target: 2.")
    assert len(pair["chosen"]) == 5 and pair["rejected"] == [{"role": "assistant",
                                                               "content": "Thought: agent\nAction: submit"}]
    assert _pairs([_row(1, 0.5, 0.5, 1.0, 1.0)], tau=0.5) == []


def test_both_directions_adds_the_mirrored_pairs():
    agent_better = [_row(2, 0.25, 1.0, 0.5, 1.0), _row(1, 0.0, 0.0, 0.5, 1.0)]
    assert _pairs(agent_better, tau=0.5) == []
    step, outcome = _pairs(agent_better, tau=0.5, both_directions=True)
    assert (step["kind"], outcome["kind"]) == ("step", "outcome")
    assert step["chosen"] == [{"role": "assistant", "content": "Thought: agent\nAction: submit"}]
    assert step["rejected"][0]["content"] == "Thought: expert at 1\nAction: inc"
    assert (step["chosen_final_reward"], step["rejected_final_reward"]) == (1.0, 0.5)
    assert _pairs([_row(2, 0.5, 1.0, 0.5, 1.0)], tau=0.5, both_directions=True) == []  # margin exactly τ


def test_dpo_loss_against_a_hand_computation():
    # margins: ((-10) - (-11)) - ((-12) - (-11)) = 2 and ((-7) - (-5)) - ((-6) - (-6)) = -2
    loss = dpo_loss(torch.tensor([-10.0, -7.0]), torch.tensor([-12.0, -6.0]), torch.tensor([-11.0, -5.0]),
                    torch.tensor([-11.0, -6.0]), beta=0.5)
    # -log σ(x) = log(1 + e^{-x}) at x = β·margin = 1 and -1
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0))], abs=1e-6)
    same = dpo_loss(torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([-3.0]), torch.tensor([-4.0]), 0.1)
    assert same.item() == pytest.approx(math.log(2))  # policy == reference


def test_mixture_loss_is_the_weighted_batch_mean_of_dpo_and_sft():
    kinds = ["outcome", "step", "step"]
    weights = loss_weights(kinds)
    assert weights == [(3.0, 3.0), (1.5, 0.0), (1.5, 0.0)]
    loss = mixture_loss(torch.tensor([-10.0, -2.0, -3.0]), torch.tensor([-12.0, -2.0, -3.0]),
                        torch.tensor([-11.0, -2.0, -3.0]), torch.tensor([-11.0, -2.0, -3.0]),
                        torch.tensor([w[0] for w in weights]), torch.tensor([w[1] for w in weights]), beta=0.5)
    o_dpo, s_dpo = math.log(1 + math.exp(-1.0)), math.log(2)
    expected = (3.0 * o_dpo + 3.0 * 10.0 + 1.5 * s_dpo + 1.5 * s_dpo) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(o_dpo + s_dpo + 10.0)  # Eq. 10 with one outcome pair


@pytest.mark.parametrize("sft_on", ["outcome_winners", "all_chosen"])
def test_every_minibatch_is_an_unbiased_estimate_of_the_per_set_expectations(sft_on):
    kinds = ["outcome", "outcome", "step", "step", "step"]
    dpo = [0.3, 0.9, 0.1, 0.4, 1.6]
    nll = [5.0, 7.0, 2.0, 4.0, 9.0]
    weights = loss_weights(kinds, sft_on)
    sft_mean = (5.0 + 7.0) / 2 if sft_on == "outcome_winners" else sum(nll) / 5
    target = (0.3 + 0.9) / 2 + (0.1 + 0.4 + 1.6) / 3 + sft_mean
    batches = list(itertools.combinations(range(5), 2))
    estimates = [sum(weights[i][0] * dpo[i] + weights[i][1] * nll[i] for i in batch) / 2 for batch in batches]
    assert sum(estimates) / len(estimates) == pytest.approx(target)
    plain = [sum(dpo[i] + nll[i] for i in batch) / 2 for batch in batches]
    assert sum(plain) / len(plain) != pytest.approx(target)  # an unweighted mean is not Eq. 10


def test_loss_weights_refuse_unknown_settings():
    with pytest.raises(ValueError, match="sft_on"):
        loss_weights(["outcome"], "winners")
    with pytest.raises(ValueError, match="kinds"):
        loss_weights(["outcome", "global"])
