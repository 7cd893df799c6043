"""The transformers backend on the real embedded model."""

from __future__ import annotations

import math

import pytest

from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.generation import sequence_logprob

pytestmark = pytest.mark.slow

QUESTIONS = ["Ava has 3 apples and gets 4 more. How many apples does she have?",
             "A box holds 6 eggs. How many eggs are in 5 boxes?"]


def _prompts(backend, few_shot):
    env = MathEnvironment()
    return [backend.render(env.explore_prompt(Task(str(i), q, ""), few_shot)) for i, q in enumerate(QUESTIONS)]


def test_converted_model_has_the_chat_template(backend):
    prompt = _prompts(backend, few_shot=False)[0]
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")


def test_self_reward_equals_a_direct_forward_pass(backend):
    """Log-probs recorded during batched, left-padded sampling equal log p(a|x) computed afresh."""
    prompts = _prompts(backend, few_shot=True)
    samples = backend.sample(prompts, n=3, max_new_tokens=40, seed=11)
    assert [len(group) for group in samples] == [3, 3]
    for prompt, group in zip(prompts, samples):
        for generation in group:
            assert generation.n_tokens > 0
            expected = sequence_logprob(backend.model, backend.tokenizer, prompt, generation.token_ids)
            assert generation.logprob_sum == pytest.approx(expected, abs=2e-3 * generation.n_tokens)
            assert generation.self_reward == pytest.approx(expected / generation.n_tokens, abs=2e-3)
            assert generation.self_reward < 0


def test_sampling_is_seeded_and_greedy_is_deterministic(backend):
    prompts = _prompts(backend, few_shot=False)
    first = backend.sample(prompts, n=2, max_new_tokens=16, seed=5)
    second = backend.sample(prompts, n=2, max_new_tokens=16, seed=5)
    assert [[g.token_ids for g in group] for group in first] == [[g.token_ids for g in group] for group in second]
    greedy = backend.greedy(prompts, max_new_tokens=16)
    assert [g.text for g in greedy] == [g.text for g in backend.greedy(prompts, max_new_tokens=16)]
    assert all(math.isfinite(g.logprob_sum) for g in greedy)


def test_generation_stops_at_eos_and_excludes_padding(backend):
    samples = backend.sample(_prompts(backend, few_shot=True), n=4, max_new_tokens=64, seed=3)
    eos = backend.tokenizer.eos_token_id
    for group in samples:
        for generation in group:
            assert eos not in generation.token_ids[:-1]


def test_greedy_decoding_matches_transformers_generate(backend):
    """The hand-written decoding loop (left padding, cache, rows leaving the batch) agrees with `generate`."""
    import torch

    prompts = _prompts(backend, few_shot=False) + _prompts(backend, few_shot=True)
    ours = backend.greedy(prompts, max_new_tokens=24)
    for prompt, generation in zip(prompts, ours):
        encoded = backend.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            reference = backend.model.generate(**encoded, do_sample=False, max_new_tokens=24,
                                               eos_token_id=backend.tokenizer.eos_token_id,
                                               pad_token_id=backend.tokenizer.pad_token_id)
        assert generation.token_ids == tuple(reference[0, encoded["input_ids"].shape[1]:].tolist())
