"""The transformers backend on the real embedded model."""

from __future__ import annotations

import math

import pytest
import tqdm

from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.generation.transformers_backend import sequence_logprob

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


def test_generation_stops_on_every_eos_id_of_the_generation_config_as_vllm_does(backend, base_model, tmp_path):
    """A checkpoint whose generation_config.json lists a second EOS id (LLaMA-3's end of turn): the greedy
    answer ends at the first token with that id, as vLLM's would."""
    import json

    from envisions_flow.generation.transformers_backend import TransformersBackend

    prompt = _prompts(backend, False)[:1]
    free = backend.greedy(prompt, max_new_tokens=12)[0].token_ids
    stop = free[2]
    assert backend.tokenizer.eos_token_id not in free[:3]  # the scenario: the third token is an ordinary one
    model = tmp_path / "model"
    model.mkdir()
    for path in base_model.iterdir():
        (model / path.name).symlink_to(path)
    (model / "generation_config.json").unlink()
    generation_config = json.loads((base_model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps(
        {**generation_config, "eos_token_id": [backend.tokenizer.eos_token_id, stop]}))
    stopping = TransformersBackend(model, batch_size=8, progress=False)
    assert stopping.stop_ids == {backend.tokenizer.eos_token_id, stop}
    assert stopping.greedy(prompt, max_new_tokens=12)[0].token_ids == free[:free.index(stop) + 1]


def test_greedy_decoding_matches_transformers_generate(backend):
    """The hand-written decoding loop (left padding, cache, rows leaving the batch) agrees with `generate`.

    Both take the most likely token, from logits that batching, padding and the attention kernel round
    differently (by ~1e-5): the two may part only where the top two tokens are that close, a tie.
    """
    import torch

    prompts = _prompts(backend, few_shot=False) + _prompts(backend, few_shot=True)
    ours = backend.greedy(prompts, max_new_tokens=24)
    for prompt, generation in zip(prompts, ours):
        encoded = backend.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            reference = backend.model.generate(**encoded, do_sample=False, max_new_tokens=24,
                                               eos_token_id=backend.tokenizer.eos_token_id,
                                               pad_token_id=backend.tokenizer.pad_token_id)
        theirs = tuple(reference[0, encoded["input_ids"].shape[1]:].tolist())
        if generation.token_ids != theirs:
            parted = next((i for i, (a, b) in enumerate(zip(generation.token_ids, theirs)) if a != b), None)
            assert parted is not None, f"one stopped early: {generation.token_ids} and {theirs}"
            ids = torch.cat([encoded["input_ids"][0], torch.tensor(theirs[:parted])])[None]
            with torch.inference_mode():
                logits = backend.model(ids).logits[0, -1]
            gap = (logits[generation.token_ids[parted]] - logits[theirs[parted]]).abs().item()
            assert gap < 1e-3, f"greedy parted from generate at token {parted} with a logit gap of {gap}"


def test_drawn_tokens_follow_the_distribution_and_carry_its_log_probs():
    import torch

    from envisions_flow.generation.transformers_backend import draw_tokens

    probabilities = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    logits = probabilities.log().expand(20000, -1)
    chosen, logprobs = draw_tokens(logits, torch.rand(len(logits), 1, generator=torch.Generator().manual_seed(0)))
    counts = torch.bincount(chosen, minlength=5).float() / len(chosen)
    assert counts[1] == 0 and counts[4] == 0  # zero-probability tokens, the last one included, never come up
    assert torch.allclose(counts, probabilities, atol=0.015)
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1).gather(1, chosen[:, None]).squeeze(1))


def test_draws_over_many_blocks_reach_every_token_with_its_probability_and_skip_impossible_ones():
    """A vocabulary of 4 blocks and a part: zero-probability runs at block edges, a whole empty block."""
    import torch

    from envisions_flow.generation.transformers_backend import draw_tokens

    weights = torch.rand(1100, generator=torch.Generator().manual_seed(1)) + 0.5
    impossible = torch.zeros(1100, dtype=torch.bool)
    for start, stop in ((0, 3), (250, 262), (512, 768), (1090, 1100)):
        impossible[start:stop] = True
    weights[impossible] = 0
    probabilities = weights / weights.sum()
    logits = probabilities.log().expand(400_000, -1)
    chosen, logprobs = draw_tokens(logits, torch.rand(len(logits), 1, generator=torch.Generator().manual_seed(2)))
    counts = torch.bincount(chosen, minlength=1100).float() / len(chosen)
    assert counts[impossible].sum() == 0 and len(counts) == 1100
    assert (counts[~impossible] > 0).all()
    assert torch.allclose(counts, probabilities, atol=5 * (probabilities.max() / len(chosen)) ** 0.5)
    assert torch.allclose(logprobs, probabilities.log()[chosen])


def test_a_preallocated_cache_gives_the_logits_of_a_dynamic_one_even_past_its_capacity(backend):
    import torch
    from transformers import DynamicCache

    from envisions_flow.generation.transformers_backend import preallocated_cache

    ids = backend.tokenizer(_prompts(backend, False)[:1], return_tensors="pt")["input_ids"]
    steps = torch.tensor([[backend.tokenizer.eos_token_id], [13], [42]])
    logits = []
    for cache in (DynamicCache(config=backend.model.config), preallocated_cache(backend.model.config, ids.shape[1] + 1)):
        with torch.inference_mode():
            rows = [backend.model(input_ids=ids, **{backend.cache_keyword: cache}, use_cache=True).logits[:, -1]]
            for token in steps:  # the third step is past the planned capacity
                rows.append(backend.model(input_ids=token[None], **{backend.cache_keyword: cache}, use_cache=True).logits[:, -1])
        logits.append(torch.cat(rows))
    assert {type(layer).__name__ for layer in cache.layers} == {"PreallocatedLayer"}
    assert torch.allclose(logits[0], logits[1], atol=1e-4)


# The step at which each sequence of test_samples_keep_their_own_prompt... ends (sequence = prompt * 3 + sample;
# None: it runs to max_new_tokens). Prompts 1 and 4 leave whole, early, while the others stay; rows end in
# ones and twos at ten different steps, so the batch is compacted many times.
SCRIPTED_ENDS = [None, 6, 12,  1, 3, 3,  2, 9, None,  5, 15, 15,  0, 4, 4,  7, 11, None]


def test_samples_keep_their_own_prompt_while_rows_and_prompts_leave_the_batch(backend, monkeypatch):
    """Every sample's log-prob equals a fresh forward pass, though rows finish at different steps.

    Which rows end when is forced, not drawn: a draw that wraps the backend's own ends each sequence
    with the end-of-sequence token at its step of SCRIPTED_ENDS and, before that step, swaps a drawn
    stop token for the most likely other one, each forced token's log-prob read from the very logits
    the backend computed for that row. Rows and whole prompts then leave the batch in a chosen order;
    an attention that mixed up rows or prompts after a compaction would give other log-probs.
    """
    import torch

    from envisions_flow.generation import transformers_backend
    from envisions_flow.generation.draws import RowStreams
    from envisions_flow.generation.transformers_backend import SharedPrompts

    class ScriptedStreams(RowStreams):
        """RowStreams that know which sequence each remaining row is and the step being drawn."""
        current = None

        def __init__(self, seed, sequences):
            super().__init__(seed, sequences)
            self.sequences, self.step = list(sequences), None

        def uniforms(self, step, device="cpu"):
            ScriptedStreams.current, self.step = self, step
            return super().uniforms(step, device)

        def select_rows(self, keep):
            super().select_rows(keep)
            self.sequences = [self.sequences[i] for i in keep]

    draw_tokens = transformers_backend.draw_tokens
    end_token = backend.tokenizer.eos_token_id

    def scripted_draw(logits, uniforms):
        chosen, picked = draw_tokens(logits, uniforms)
        streams = ScriptedStreams.current
        probabilities = torch.softmax(logits.float(), dim=-1)
        for position, sequence in enumerate(streams.sequences):
            if streams.step == SCRIPTED_ENDS[sequence]:
                token = end_token
            elif chosen[position].item() in backend.stop_ids:
                ordinary = probabilities[position].clone()
                ordinary[list(backend.stop_ids)] = -1
                token = int(ordinary.argmax())
            else:
                continue
            chosen[position], picked[position] = token, probabilities[position, token].log()
        return chosen, picked

    kept = []
    select_rows = SharedPrompts.select_rows

    def spy(self, index):
        kept.append(sorted(set(self.prompt[index].tolist())))  # the prompts left, numbered before the call
        select_rows(self, index)

    monkeypatch.setattr(transformers_backend, "RowStreams", ScriptedStreams)
    monkeypatch.setattr(transformers_backend, "draw_tokens", scripted_draw)
    monkeypatch.setattr(SharedPrompts, "select_rows", spy)
    monkeypatch.setattr(backend, "batch_size", 18)  # the 6 prompts' 3 samples in one batch
    counted = []

    class CountingBar(tqdm.tqdm):
        def update(self, n=1):
            counted.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", CountingBar)
    questions = QUESTIONS + ["Tom reads 12 pages a day for a week. How many pages does he read?",
                             "A class of 28 pupils splits into teams of 4. How many teams are there?",
                             "Mia saves 5 dollars a week. How much has she saved after 9 weeks?",
                             "A train travels 60 miles an hour for 3 hours. How far does it go?"]
    prompts = [backend.render(MathEnvironment().explore_prompt(Task(str(i), q, ""), False))
               for i, q in enumerate(questions)]
    max_new_tokens = 20
    samples = backend.sample(prompts, n=3, max_new_tokens=max_new_tokens, seed=7)
    flat = [g for group in samples for g in group]
    assert [len(g.token_ids) for g in flat] == [max_new_tokens if end is None else end + 1 for end in SCRIPTED_ENDS]
    assert all((g.token_ids[-1] == end_token) == (end is not None) for g, end in zip(flat, SCRIPTED_ENDS))
    assert len(kept) >= 5
    assert any(left != list(range(len(left))) for left in kept)  # a prompt left while a later one stayed
    assert sum(counted) == 18 and len([n for n in counted if n]) >= 5  # the bar counts each sequence as it ends
    for prompt, group in zip(prompts, samples):
        for generation in group:
            expected = sequence_logprob(backend.model, backend.tokenizer, prompt, generation.token_ids)
            assert generation.logprob_sum == pytest.approx(expected, abs=2e-3 * generation.n_tokens)


def test_sampling_past_a_models_attention_window_is_refused_by_name(base_model, tmp_path):
    """Prompts attend as a whole; a model with windowed layers samples only within its window."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from envisions_flow.generation.transformers_backend import TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=64)
    MistralForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    windowed = TransformersBackend(tmp_path, progress=False)
    prompt = windowed.render([{"role": "user", "content": "Add 2 and 3."}])
    assert [len(g.token_ids) for g in windowed.sample([prompt], n=2, max_new_tokens=8, seed=0)[0]] == [8, 8]
    with pytest.raises(ValueError, match="MistralForCausalLM attends within windows of 64 tokens"):
        windowed.sample([prompt], n=2, max_new_tokens=60, seed=0)


def test_each_sequence_draws_its_own_uniforms_whoever_shares_its_batch():
    """RowStreams: the t-th uniform of a sequence is a function of (seed, sequence, t) only."""
    import numpy as np

    from envisions_flow.generation.transformers_backend import RowStreams

    everyone = RowStreams(11, range(8))
    alone = RowStreams(11, [5])
    for step in range(3):
        assert everyone.uniforms(step)[5].item() == alone.uniforms(step)[0].item()
    everyone.select_rows([1, 5, 6])  # rows leave the batch: the others keep their streams
    assert everyone.uniforms(3)[1].item() == alone.uniforms(3)[0].item()
    draws = RowStreams(3, range(20_000)).uniforms(0).numpy().ravel()
    assert draws.min() >= 0 and draws.max() < 1 and abs(draws.mean() - 0.5) < 0.01 and len(np.unique(draws)) > 19_900
    assert not np.array_equal(RowStreams(4, range(8)).uniforms(0), RowStreams(3, range(8)).uniforms(0))
    assert not np.array_equal(RowStreams(3, range(8)).uniforms(1), RowStreams(3, range(8)).uniforms(0))


@pytest.mark.slow(seconds=30)
def test_the_same_seed_gives_the_same_samples_whatever_the_batch(base_model):
    """One prompt per batch, two, or all in one ("auto"): the same token ids, exactly.

    A batch of another size or padding changes the float rounding of the logits, and a draw changes where
    its uniform falls within that change of a boundary of the cumulative distribution: in float32 about
    one draw in 500 here. The model runs in float64 (its RMS norms still round to float32: logits then
    move by ~1e-7 of themselves, log-probs by ~1e-7), so over these ~300 draws a change has a chance
    below 1e-4 on any CPU, and the token ids are compared exactly.
    """
    import torch

    from envisions_flow.generation.transformers_backend import TransformersBackend

    backend = TransformersBackend(base_model, batch_size="auto", progress=False)
    backend.model.to(torch.float64)
    questions = QUESTIONS + ["Tom reads 12 pages a day for a week. How many pages does he read?",
                             "A class of 28 pupils splits into teams of 4. How many teams are there?"]
    # prompts of two lengths (a refine prompt, ~125 tokens, and a zero-shot one, ~85), so batches are padded
    environment = MathEnvironment()
    prompts = [backend.render(environment.refine_prompt(Task(str(i), q, ""), "def solution():\n    return 0")
                              if i % 2 == 0 else environment.explore_prompt(Task(str(i), q, ""), False))
               for i, q in enumerate(questions)]
    samples = {}
    for batch_size in (3, 6, "auto"):
        backend.batch_size = batch_size
        samples[batch_size] = backend.sample(prompts, n=3, max_new_tokens=24, seed=17)
    assert backend.prompts_per_batch([100] * 4, 3, 24) == 4  # auto: all four prompts in one batch
    ids = {size: [[g.token_ids for g in group] for group in groups] for size, groups in samples.items()}
    assert ids[3] == ids[6] == ids["auto"]
    for size in (3, 6):
        for ours, theirs in zip(samples[size], samples["auto"]):
            assert [g.logprob_sum for g in ours] == pytest.approx([g.logprob_sum for g in theirs], abs=1e-5)
    other = backend.sample(prompts[:1], n=3, max_new_tokens=24, seed=18)  # one prompt is enough to differ
    assert [g.token_ids for g in other[0]] != ids["auto"][0]


def test_auto_batch_holds_every_sequence_that_fits_in_half_the_free_memory(base_model):
    from transformers import AutoConfig

    from envisions_flow.generation.transformers_backend import auto_batch

    config = AutoConfig.from_pretrained(base_model)
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * (config.hidden_size //
                                                                              config.num_attention_heads) * 4
    assert per_token == 46_080  # SmolLM2-135M in float32: 46 KB of keys and values per token
    plenty = 1 << 40
    assert auto_batch(config, 100, 5, 128, plenty, 4, 512) == 102  # the row cap: 512 // 5 prompts
    # 8 GiB free: half of it over (100 + 5 x 128) tokens of cache, the prefill (scores and MLP activations three
    # times over) and 5 rows of logits per prompt
    prefill = 3 * (config.num_attention_heads * 100**2 * 4 + 100 * config.intermediate_size * 4)
    per_prompt = (100 + 5 * 128) * per_token + prefill + 4 * 5 * config.vocab_size * 4
    assert auto_batch(config, 100, 5, 128, 8 << 30, 4, 10_000) == (4 << 30) // per_prompt
    assert auto_batch(config, 100, 5, 128, 0, 4, 512) == 1  # never less than one prompt


MEMORY_PROBE = """
import sys, threading, time
from envisions_flow.generation.batch_memory import AUTO_BATCH_MEMORY_SHARE, auto_batch
from envisions_flow.generation.transformers_backend import TransformersBackend
backend = TransformersBackend(sys.argv[1], batch_size="auto", progress=False)
prompt = " ".join(["apple"] * 400)
length = len(backend.tokenizer(prompt, add_special_tokens=False)["input_ids"])
free = 1 << 30
prompts = auto_batch(backend.model.config, length, 1, 16, free, 4, 512)
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
start, peak = rss(), [0]
def watch():
    while True:
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
backend.greedy([prompt] * prompts, 16)
time.sleep(0.05)
print(prompts, peak[0] - start, int(free * AUTO_BATCH_MEMORY_SHARE))
"""


@pytest.mark.slow
def test_an_auto_batch_stays_within_its_share_of_the_free_memory(base_model):
    """The estimate against the process's real peak: the prompts auto_batch lets a 1 GiB budget decode together
    (400-token prompts, so the prefill's scores and activations weigh as much as the caches) stay under half of it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(base_model)], capture_output=True, text=True,
                          timeout=600, check=True)
    prompts, peak, budget = map(int, done.stdout.split())
    assert prompts >= 4  # the budget holds several prompts: the test measures the batch, not one row
    assert peak <= budget, f"{prompts} prompts took {peak / 2**20:.0f} MiB above the loaded model, planned {budget / 2**20:.0f}"
