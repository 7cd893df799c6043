"""Prompts that begin alike are encoded once up to their common prefix (transformers_backend._prefill)."""

from __future__ import annotations

import pytest

from envisions_flow.generation import transformers_backend
from envisions_flow.generation.transformers_backend import _common_prefix, sequence_logprob

FEW_SHOT = ("Answer with a Python function solution() that returns the answer.\n"
            "Q: Tom has 3 apples and buys 4 more. How many apples does he have?\n"
            "def solution():\n    apples = 3\n    bought = 4\n    return apples + bought\n"
            "Q: A box holds 6 pens. How many pens are in 5 boxes?\n"
            "def solution():\n    pens = 6\n    boxes = 5\n    return pens * boxes\n")
QUESTIONS = ["Q: Ann reads 12 pages a day. How many pages in 3 days?", "Q: 40 birds, 15 fly away. How many stay?",
             "Q: A train has 8 cars of 50 seats. How many seats?", "Q: Sam had 9 coins and lost 2.",
             "Q: Each of 7 kids gets 4 sweets. How many sweets are given?"]


def test_the_common_prefix_is_what_every_prompt_begins_with():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert _common_prefix([[1, 2], [1, 2]]) == 2
    assert _common_prefix([[7], [1, 2]]) == 0


@pytest.mark.slow
def test_a_shared_prefix_changes_no_token_and_no_log_prob(backend, monkeypatch):
    """Greedy tokens equal those of encoding every prompt whole, and every sampled log-prob (prompts of different
    lengths, so rows are padded between the prefix and their own tokens) equals a fresh forward pass."""
    prompts = [backend.render([{"role": "user", "content": FEW_SHOT + question}]) for question in QUESTIONS]
    ids = backend.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    assert _common_prefix(ids) >= transformers_backend.MIN_SHARED_PREFIX  # the shared path is the one tested
    assert len({len(row) for row in ids}) > 1
    shared = backend.greedy(prompts, 24)
    samples = backend.sample(prompts, 2, 24, seed=3)
    monkeypatch.setattr(transformers_backend, "MIN_SHARED_PREFIX", 10**9)
    whole = backend.greedy(prompts, 24)
    assert [g.token_ids for g in shared] == [g.token_ids for g in whole]
    for a, b in zip(shared, whole):
        assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-3)
    for prompt, group in zip(prompts, samples):
        for generation in group:
            reference = sequence_logprob(backend.model, backend.tokenizer, prompt, generation.token_ids)
            assert generation.logprob_sum == pytest.approx(reference, abs=1e-3)
