"""Step mode (agents.py): the ReAct format, batched rollouts, the Parquet round trip, assistant masks."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from envisions_flow.environments.base import Task
from my_environments.counter import INVALID_ACTION, CounterEnvironment, counter_task
from envisions_flow.generation.base import Generation
from envisions_flow.methods.agents import (
    NO_ACTION,
    STEP_LIMIT,
    Start,
    Step,
    parse_step,
    react_messages,
    render_step,
    rollout,
    trajectories_from_frame,
    trajectory_rows,
)
from envisions_flow.workflow.artifacts import TRAJECTORIES, read_table, write_table


class CounterPolicy:
    """A policy that reads the counter from the last observation: it steps towards the target and submits.

    `detour` makes its first action a `dec`, so some episodes take longer; `babble` answers
    without an Action line. It records every batch it is asked for, to check batching.
    """

    def __init__(self, detour: bool = False, babble: bool = False):
        self.detour, self.babble, self.batches = detour, babble, []

    def render(self, messages):
        return "\n".join(message["content"] for message in messages)

    def _act(self, prompt: str) -> Generation:
        value, target = map(int, re.findall(r"Value: (-?\d+)\. Target: (-?\d+)\.", prompt)[-1])
        if self.babble:
            return Generation("I am not sure what to do.", (1,), -1.0)
        if self.detour and "Thought: value" not in prompt:  # its first step
            action = "dec"
        else:
            action = "submit" if value == target else ("inc" if value < target else "dec")
        return Generation(render_step(f"value {value}, target {target}", action), (1, 2), -0.5)

    def greedy(self, prompts, max_new_tokens):
        self.batches.append(len(prompts))
        return [self._act(prompt) for prompt in prompts]

    def sample(self, prompts, n, max_new_tokens, seed):
        self.batches.append(len(prompts))
        return [[self._act(prompt) for _ in range(n)] for prompt in prompts]


def test_parse_step_reads_thought_and_action_in_the_formats_small_models_write():
    assert parse_step("Thought: go up\nAction: inc") == ("go up", "inc")
    assert parse_step("thought: x\naction:   `submit`  \nmore text") == ("x", "submit")
    assert parse_step("Thought: fenced\nAction:\n```\nagent.type(\"a\")\n```") == ("fenced", 'agent.type("a")')
    assert parse_step("Thought: no action here") == ("no action here", "")
    assert parse_step("Action:") == ("", "")


def test_react_messages_alternate_observations_and_steps():
    environment = CounterEnvironment()
    task = counter_task("c", 0, 1)
    steps = (Step(task.question, "up", "inc", 0.0, False, ""),)
    messages = react_messages(environment, steps, "Value: 1. Target: 1.")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == f"{environment.step_instruction}\n\nValue: 0. Target: 1."
    assert messages[1]["content"] == "Thought: up\nAction: inc"
    assert messages[2]["content"] == "Observation:\nValue: 1. Target: 1."
    assert react_messages(environment, steps) == messages[:2]


def test_rollout_runs_every_episode_to_its_end_in_one_batch_per_depth():
    environment, policy = CounterEnvironment(), CounterPolicy()
    starts = [Start("a", counter_task("a", 0, 2)), Start("b", counter_task("b", 3, 3))]
    first, second = rollout(environment, policy, starts, greedy=True, max_steps=10, max_new_tokens=8)
    assert [s.action for s in first.steps] == ["inc", "inc", "submit"]
    assert [s.observation for s in first.steps] == ["Value: 0. Target: 2.", "Value: 1. Target: 2.",
                                                   "Value: 2. Target: 2."]
    assert [s.done for s in first.steps] == [False, False, True] and first.final_reward == 1.0
    assert [s.action for s in second.steps] == ["submit"] and second.final_reward == 1.0
    assert policy.batches == [2, 1, 1]  # both episodes at depth 0, then only the one still open


def test_rollout_ends_episodes_at_the_step_limit_and_on_unparsable_generations():
    environment = CounterEnvironment()
    (limited,) = rollout(environment, CounterPolicy(), [Start("a", counter_task("a", 0, 5))], greedy=True,
                         max_steps=2, max_new_tokens=8)
    assert len(limited.steps) == 2 and limited.steps[-1].error_class == STEP_LIMIT and limited.steps[-1].done
    (babbled,) = rollout(environment, CounterPolicy(babble=True), [Start("b", counter_task("b", 0, 1))],
                         greedy=True, max_steps=5, max_new_tokens=8)
    assert [(s.action, s.error_class, s.done) for s in babbled.steps] == [("", NO_ACTION, True)]


def test_rollout_continues_a_prefix_and_gives_n_continuations_in_order():
    environment = CounterEnvironment()
    task = counter_task("a", 0, 1)
    prefix = (Step(task.question, "detour", "dec", 0.0, False, ""),)
    # no observation given: the environment replays the prefix to find it
    trajectories = rollout(environment, CounterPolicy(), [Start("a", task, prefix)], greedy=False, max_steps=10,
                           max_new_tokens=8, n=3, seed=1)
    assert [t.episode_id for t in trajectories] == ["a#0", "a#1", "a#2"]
    for trajectory in trajectories:
        assert trajectory.steps[0] == prefix[0]
        assert [s.action for s in trajectory.steps] == ["dec", "inc", "inc", "submit"]
        assert trajectory.steps[1].observation == "Value: -1. Target: 1."
    ended = (Step(task.question, "", "jump", 0.0, True, INVALID_ACTION),)
    (unchanged,) = rollout(environment, CounterPolicy(), [Start("z", task, ended)], greedy=True, max_steps=10,
                           max_new_tokens=8)
    assert unchanged.steps == ended


def test_trajectories_survive_the_parquet_round_trip(tmp_path):
    environment = CounterEnvironment()
    starts = [Start("b", counter_task("b", 0, 1)), Start("a", counter_task("a", 2, 0))]
    trajectories = rollout(environment, CounterPolicy(detour=True), starts, greedy=True, max_steps=10,
                           max_new_tokens=8)
    write_table(pd.DataFrame(trajectory_rows(trajectories)), tmp_path / "t.parquet", TRAJECTORIES)
    frame = read_table(tmp_path / "t.parquet", TRAJECTORIES)
    assert list(frame["step"][:3]) == [1, 2, 3]
    back = trajectories_from_frame(frame.sample(frac=1, random_state=0))  # row order must not matter
    assert [t.episode_id for t in back] != [] and {t.episode_id for t in back} == {"a", "b"}
    by_id = {t.episode_id: t for t in back}
    for trajectory in trajectories:
        assert by_id[trajectory.episode_id].steps == trajectory.steps
        assert by_id[trajectory.episode_id].task == Task(trajectory.task.id, trajectory.task.question, "")


@pytest.mark.slow
def test_trajectory_example_masks_everything_but_the_agents_turns(base_model):
    from envisions_flow.training.examples import trajectory_example
    from envisions_flow.training.trainers import load_tokenizer

    tokenizer = load_tokenizer(base_model)
    environment = CounterEnvironment()
    task = counter_task("a", 0, 1)
    steps = (Step(task.question, "go up", "inc", 0.0, False, ""),
             Step("Value: 1. Target: 1.", "there", "submit", 1.0, True, ""))
    messages = react_messages(environment, steps)
    example = trajectory_example(tokenizer, messages)
    trained = tokenizer.decode([t for t, m in zip(example["input_ids"], example["assistant_masks"]) if m])
    assert trained == ("Thought: go up\nAction: inc<|im_end|>\nThought: there\nAction: submit<|im_end|>\n")
    assert "Observation" not in trained and "Value: 1" not in trained
    suffix = trajectory_example(tokenizer, messages, first_trained=3)
    assert suffix["input_ids"] == example["input_ids"]
    assert tokenizer.decode([t for t, m in zip(suffix["input_ids"], suffix["assistant_masks"]) if m]) == (
        "Thought: there\nAction: submit<|im_end|>\n")


@pytest.mark.browser
def test_web_step_mode_replays_the_worked_episode_page_by_page():
    """The few-shot episode is real: each prefix of its actions leaves exactly the page it shows next."""
    from envisions_flow.environments.web import WebEnvironment
    from envisions_flow.environments.web_prompts import ONE_SHOT, STEP_EXAMPLE_STEPS

    environment = WebEnvironment(workers=2)
    (observation,) = environment.observe([("enter-text", 7)])
    assert observation == ONE_SHOT[0]
    task = Task("enter-text:7", observation, "enter-text")
    actions = [action for _, action, _ in STEP_EXAMPLE_STEPS]
    outcomes = environment.replay([task] * 4, [actions[:1], actions[:2], actions, ['agent.click_xpath("//nope")']])
    for (_, _, shown), outcome in zip(STEP_EXAMPLE_STEPS[1:], outcomes):
        assert (outcome.done, outcome.reward, outcome.error_class) == (False, 0.0, "")
        assert outcome.observation == shown
    assert (outcomes[2].done, outcomes[2].reward, outcomes[2].error_class, outcomes[2].observation) == (True, 1.0, "", "")
    assert (outcomes[3].done, outcomes[3].reward, outcomes[3].error_class) == (True, 0.0, "no_element")
    example = environment.step_example
    assert [m["role"] for m in example] == ["user", "assistant"] * 3
    assert [parse_step(m["content"])[1] for m in example[1::2]] == actions
