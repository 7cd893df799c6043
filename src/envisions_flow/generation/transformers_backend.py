"""Batched decoding with transformers on CPU or GPU, recording each sampled token's log-prob.

The K samples of a prompt share its KV cache (SharedPrompts, cascade attention), the cache is
preallocated for the whole decode, and tokens are drawn by inverting the cumulative distribution:
benchmarks/README.md gives what each of these bought on a CPU. By default a batch holds every
sequence of the call that fits in memory (`auto_batch`), and each sequence draws its own stream of
uniforms (`RowStreams`), so the batch never changes which samples a seed gives.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from envisions_flow.environments.base import Messages
from envisions_flow.generation.base import Generation, render_chat

log = logging.getLogger(__name__)


class TransformersBackend:
    """Batched decoding with KV cache on CPU or GPU, recording token log-probs on the fly."""

    def __init__(self, model_path: str | Path, batch_size: int | str = "auto", dtype: str = "auto",
                 progress: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                       "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device).eval()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        self.cache_keyword = cache_keyword(self.model)
        use_shared_prompt_attention(self.model)
        if self.device == "cpu":
            reuse_freed_memory()
        self.batch_size = batch_size
        self.progress = progress

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, seed: int) -> list[list[Generation]]:
        flat = self._run(prompts, n, max_new_tokens, seed, do_sample=True, desc="sampling")
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        return self._run(prompts, 1, max_new_tokens, 0, do_sample=False, desc="greedy")

    def _run(self, prompts: Sequence[str], n: int, max_new_tokens: int, seed: int, do_sample: bool, desc: str):
        from tqdm import tqdm

        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        per_batch = self.prompts_per_batch(lengths, n, max_new_tokens)
        results: list[Generation | None] = [None] * (len(prompts) * n)
        with tqdm(total=len(prompts) * n, desc=desc, unit="seq", disable=not self.progress) as bar:
            for start in range(0, len(order), per_batch):
                indices = order[start : start + per_batch]
                # a sequence is known by its place in the call, never by its batch
                streams = RowStreams(seed, [i * n + k for i in indices for k in range(n)]) if do_sample else None
                generations = self._generate([prompts[i] for i in indices], n, max_new_tokens, streams, bar)
                for position, prompt_index in enumerate(indices):
                    for k in range(n):
                        results[prompt_index * n + k] = generations[position * n + k]
        return results

    def prompts_per_batch(self, lengths: Sequence[int], n: int, max_new_tokens: int) -> int:
        """Prompts decoded together: `batch_size` sequences, or with "auto" every prompt of the call
        that fits (`auto_batch`), split into batches of equal size when they do not all fit."""
        if self.batch_size != "auto":
            return max(1, int(self.batch_size) // n)
        if not lengths:
            return 1
        fit = auto_batch(self.model.config, max(lengths), n, max_new_tokens, available_memory(self.device),
                         next(self.model.parameters()).element_size(), AUTO_BATCH_ROWS[self.device == "cuda"])
        batches = math.ceil(len(lengths) / fit)
        return math.ceil(len(lengths) / batches)

    def _generate(self, prompts: list[str], n: int, max_new_tokens: int, streams: RowStreams | None, bar):
        """n completions per prompt, decoded step by step with the KV cache.

        Written out rather than `model.generate` for what matters on a CPU: each prompt is
        encoded once and its cache kept once for its n samples, which attend to it together
        (`SharedPrompts`); finished rows leave the batch (in bulk, see `_compaction_due`)
        instead of being computed as padding until the longest one ends; and the log-prob of
        each chosen token comes from the very distribution it was drawn from (temperature 1,
        no top-k/top-p), no second pass. `streams` holds each row's uniforms (None: greedy).
        `bar` counts each sequence as it ends.
        """
        torch = self.torch
        from transformers import DynamicCache

        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        positions = (encoded["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        eos = self.stop_ids
        prompt_cache = DynamicCache(config=self.model.config)
        for layer in prompt_cache.layers:
            window = getattr(layer, "sliding_window", None)
            if window is not None and encoded["input_ids"].shape[1] + max_new_tokens > window:
                raise ValueError(
                    f"{type(self.model).__name__} attends within windows of {window} tokens, and prompts of "
                    f"{encoded['input_ids'].shape[1]} tokens plus max_new_tokens={max_new_tokens} exceed one: the "
                    "transformers backend attends to whole prompts; lower generation.max_new_tokens or sample with "
                    "generation.backend: vllm")
        with torch.inference_mode():
            logits = self.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                position_ids=positions, **{self.cache_keyword: prompt_cache}, use_cache=True,
                                logits_to_keep=1).logits[:, -1].repeat_interleave(n, dim=0)
            shared = SharedPrompts(prompt_cache, encoded["attention_mask"], n)
            cache = preallocated_cache(self.model.config, max_new_tokens)  # the generated tokens' keys and values
            next_position = (positions[:, -1] + 1).repeat_interleave(n)
            rows = list(range(logits.shape[0]))  # the output row of each row of the batch
            finished = [False] * len(rows)
            tokens: list[list[int]] = [[] for _ in rows]
            logprob_sums = [0.0] * len(rows)
            for step in range(max_new_tokens):
                chosen, picked = (draw_tokens(logits, streams.uniforms(step, logits.device)) if streams is not None
                                  else greedy_tokens(logits))
                ended = 0
                for position, (row, token, logprob) in enumerate(zip(rows, chosen.tolist(), picked.tolist())):
                    if not finished[position]:
                        tokens[row].append(token)
                        logprob_sums[row] += logprob
                        finished[position] = token in eos
                        ended += token in eos
                last = all(finished) or step == max_new_tokens - 1
                bar.update(ended + (finished.count(False) if last else 0))  # at the last step, rows cut short
                if last:
                    break
                if _compaction_due(finished):
                    keep = [position for position, done in enumerate(finished) if not done]
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    shared.select_rows(index)
                    if streams is not None:
                        streams.select_rows(keep)
                    rows, finished = [rows[i] for i in keep], [False] * len(keep)
                    chosen, next_position = chosen[index], next_position[index]
                shared.layers_attended = 0
                logits = self.model(input_ids=chosen[:, None], position_ids=next_position[:, None],
                                    **{self.cache_keyword: cache}, use_cache=True, shared_prompts=shared).logits[:, -1]
                if shared.layers_attended != len(shared.keys):
                    raise RuntimeError(f"{type(self.model).__name__} does not take its attention from transformers' "
                                       "AttentionInterface, which sampling with shared prompts needs")
                next_position = next_position + 1
        return [Generation(self.tokenizer.decode(ids, skip_special_tokens=True), tuple(ids), total)
                for ids, total in zip(tokens, logprob_sums)]


def stop_token_ids(tokenizer, generation_config) -> frozenset[int]:
    """The tokens a sequence ends on: the tokenizer's EOS and every `eos_token_id` of the generation config.

    vLLM stops on the same set (chat models such as LLaMA-3 end their turns on a token other than
    the tokenizer's EOS, listed in generation_config.json), so both backends end a sequence alike.
    """
    configured = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids = configured if isinstance(configured, (list, tuple)) else [configured]
    return frozenset(int(i) for i in [tokenizer.eos_token_id, *ids] if i is not None)


def cache_keyword(model) -> str:
    """The name the model's forward takes its KV cache by: `cache` from transformers 5.24 on, `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def reuse_freed_memory() -> None:
    """Have glibc keep freed memory for the next allocation instead of returning it to the system.

    glibc maps every allocation over 32 MiB afresh and unmaps it when freed, and a fresh page
    costs a fault when first written (~4 us each here). A decoding step at batch 320 allocates
    two such tensors (the logits and their softmax), 30,000 faults and 7% of the step. With
    `mmap` off and trimming raised, the heap keeps those pages. A no-op off glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    mmap_max, trim_threshold = -4, -1  # M_MMAP_MAX and M_TRIM_THRESHOLD in malloc.h
    libc.mallopt(mmap_max, 0)
    libc.mallopt(trim_threshold, 1 << 30)


def _compaction_due(finished: list[bool]) -> bool:
    """Whether to drop the finished rows from the batch now.

    Dropping copies the cache of every remaining row, as much as an attention pass reads;
    a finished row left in costs its share of a step. Rows are dropped once an eighth of the
    batch is finished, which bounds both costs to about an eighth of a step.
    """
    return sum(finished) >= max(1, len(finished) // 8)


class SharedPrompts:
    """The prompts' keys and values, kept once per prompt and attended to by all its samples.

    The n samples of a prompt share its cache. Copying it n times (`repeat_interleave`) makes
    every sample read its own copy at every step, and on a CPU attention is bound by reading
    the cache. Here a decoding step reads each prompt's cache once for its n samples: their
    queries are stacked as rows of one matrix product (cascade attention), and one softmax
    runs over the prompt's positions and the sample's own generated ones.
    """

    def __init__(self, cache, attention_mask, n: int) -> None:
        import torch

        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self.padding = ~attention_mask.bool()[:, None, None, :]  # (prompts, 1, 1, positions)
        self.n = n
        prompts = attention_mask.shape[0]
        self.prompt = torch.arange(prompts, device=attention_mask.device).repeat_interleave(n)  # of each row
        self.sample = torch.arange(n, device=attention_mask.device).repeat(prompts)  # its index among the n
        self.row_padding = self.padding[self.prompt]
        self.layers_attended = 0

    def select_rows(self, index) -> None:
        """Keep these rows; drop the prompts none of them belongs to."""
        import torch

        prompt = self.prompt[index]
        alive = torch.unique(prompt)
        if len(alive) < len(self.keys[0]):
            self.keys = [keys[alive] for keys in self.keys]
            self.values = [values[alive] for values in self.values]
            self.padding = self.padding[alive]
            prompt = torch.searchsorted(alive, prompt)
        self.prompt, self.sample = prompt, self.sample[index]
        self.row_padding = self.padding[self.prompt]

    def attend(self, layer: int, query, key, value, attention_mask, scaling: float):
        """Attention of one new token per row over its prompt and its own generated tokens."""
        import torch

        rows, heads, _, dim = query.shape
        key_heads = key.shape[1]
        group = heads // key_heads
        query = query.view(rows, key_heads, group, dim)
        prompt_keys, prompt_values = self.keys[layer], self.values[layer]
        prompts, length = prompt_keys.shape[0], prompt_keys.shape[2]

        def by_prompt(per_row):  # (rows, key heads, group, x) -> (prompts, key heads, n * group, x)
            grid = per_row.new_zeros(prompts, self.n, *per_row.shape[1:])
            grid[self.prompt, self.sample] = per_row
            return grid.transpose(1, 2).reshape(prompts, key_heads, self.n * group, per_row.shape[-1])

        def by_row(per_prompt):  # the inverse of by_prompt
            grid = per_prompt.view(prompts, key_heads, self.n, group, per_prompt.shape[-1]).transpose(1, 2)
            return grid[self.prompt, self.sample]

        prompt_scores = by_row(torch.matmul(by_prompt(query), prompt_keys.transpose(-1, -2)))
        prompt_scores.masked_fill_(self.row_padding, float("-inf"))
        own_scores = torch.matmul(query, key.transpose(-1, -2))
        if attention_mask is not None:  # boolean: the masks are built by `sdpa_mask`
            own_scores.masked_fill_(~attention_mask[..., -key.shape[2]:], float("-inf"))
        scores = torch.cat([prompt_scores, own_scores], dim=-1).mul_(scaling)
        probabilities = torch.softmax(scores, dim=-1, dtype=torch.promote_types(value.dtype, torch.float32))
        probabilities = probabilities.to(value.dtype)
        output = torch.matmul(probabilities[..., length:], value)
        output += by_row(torch.matmul(by_prompt(probabilities[..., :length]), prompt_values))
        self.layers_attended += 1
        return output.reshape(rows, 1, heads, dim)


SHARED_PROMPT_ATTENTION = "envisions_shared_prompts"


def shared_prompt_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prompts: SharedPrompts | None = None, **kwargs):
    """`SharedPrompts.attend` for decoding steps that pass `shared_prompts`; SDPA for everything else."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if shared_prompts is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    return shared_prompts.attend(module.layer_idx, query, key, value, attention_mask, scaling), None


def use_shared_prompt_attention(model) -> None:
    """Route `model`'s attention through `shared_prompt_attention` (its masks built as for SDPA)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SHARED_PROMPT_ATTENTION, shared_prompt_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SHARED_PROMPT_ATTENTION, sdpa_mask)
    model.set_attn_implementation(SHARED_PROMPT_ATTENTION)


def draw_tokens(logits, uniforms, block: int = 256):
    """One token per row drawn from softmax(logits), and its log-prob under that very distribution.

    By inverting the cumulative distribution at the row's uniform in [0, 1) (`uniforms`, shape
    (rows, 1), from `RowStreams`): `torch.multinomial` draws an exponential variate for every
    vocabulary entry (49k per row), a fifth of a CPU decoding step at batch 32. The inversion
    runs in two levels, over sums of `block` entries and then within the block drawn, because
    a cumulative sum over the whole vocabulary runs one entry after another (5% of a step at
    batch 320). Searching with `right=True` for a point below the block's total never lands
    on a zero-probability token. Float64 logits are drawn from in float64, others in float32.
    """
    import torch

    probabilities = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    rows, vocabulary = probabilities.shape
    spare = -vocabulary % block
    padded = (torch.nn.functional.pad(probabilities, (0, spare)) if spare else probabilities).view(rows, -1, block)
    block_totals = padded.sum(dim=-1)
    cumulative = block_totals.cumsum(dim=-1)
    draws = uniforms.to(device=logits.device, dtype=probabilities.dtype) * cumulative[:, -1:]
    chosen_block = torch.searchsorted(cumulative, draws, right=True).clamp_(max=cumulative.shape[1] - 1)
    within = padded.gather(1, chosen_block[:, :, None].expand(rows, 1, block)).squeeze(1).cumsum(dim=-1)
    below = cumulative.gather(1, chosen_block) - block_totals.gather(1, chosen_block)
    remainder = torch.minimum((draws - below).clamp_(min=0), within[:, -1:].nextafter(torch.zeros_like(below)))
    chosen = (chosen_block * block + torch.searchsorted(within, remainder, right=True)).squeeze(1)
    return chosen, probabilities.gather(1, chosen[:, None]).squeeze(1).log()


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea and Flood 2014): a bijection of uint64 that mixes every bit."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


class RowStreams:
    """A stream of uniforms per sequence, a function of (seed, sequence, step) alone.

    Counter-based (SplitMix64 of the sequence's key plus the step): the t-th number of a
    sequence does not depend on which batch it is decoded in, beside which rows, or how many
    rows left before it, so the same seed gives the same samples whatever `batch_size` is,
    up to the float rounding of the logits themselves, which the batch's size and padding
    change: in float32 a draw lands on another token about once in 500 (where its uniform
    falls within ~1e-5 of a boundary of the cumulative distribution); tests/test_generation.py
    checks equality in float64. Uniforms have 24 bits, as `torch.rand` gives in float32.
    """

    def __init__(self, seed: int, sequences: Sequence[int]) -> None:
        base = _splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64))
        self.keys = _splitmix64(base + _GOLDEN * (np.asarray(sequences, dtype=np.uint64) + np.uint64(1)))

    def uniforms(self, step: int, device="cpu"):
        """The step-th uniform of each remaining row, shape (rows, 1)."""
        import torch

        bits = _splitmix64(self.keys + _GOLDEN * np.full(1, step + 1, dtype=np.uint64)) >> np.uint64(40)
        return torch.from_numpy((bits.astype(np.float32) * np.float32(2.0**-24))[:, None]).to(device)

    def select_rows(self, keep: Sequence[int]) -> None:
        """Keep these rows' streams (the rows that stay in the batch), in this order."""
        self.keys = self.keys[np.asarray(keep, dtype=np.int64)]


# Most rows one "auto" batch holds. On a CPU a decoding step is bound by reading the weights up
# to ~256 rows and by attention over the rows' caches beyond (benchmarks/README.md): more rows buy
# little and hold more memory. A GPU keeps gaining from wider batches, up to its memory.
AUTO_BATCH_ROWS = {False: 512, True: 4096}

# Share of the memory free when sampling starts that an "auto" batch may plan to use.
AUTO_BATCH_MEMORY_SHARE = 0.5


def auto_batch(config, longest_prompt: int, n: int, max_new_tokens: int, free_bytes: int, element_size: int,
               max_rows: int) -> int:
    """How many prompts (n sequences each) to decode together: all that fit, at most `max_rows` rows.

    Per prompt the memory an upper bound needs: its cache (prompt tokens) and its n samples'
    preallocated caches (max_new_tokens each), keys and values of every layer; the prefill's
    transients in one layer: the attention scores three times over (CPU SDPA with a mask
    materialises scores, their softmax and the masked copy) and the MLP's three activations
    (gate, up, their product); and the n rows' logits with the copies a sampling step makes
    (softmax, padded blocks, cumulative sums). Measured on SmolLM2-135M (24 prompts of 600
    tokens): 1.80 GB above the loaded model, estimated 1.87 GB (the scores and MLP counted once
    gave 1.18 GB, and a 240-prompt evaluation was killed for memory).
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    key_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    per_token = 2 * text.num_hidden_layers * key_heads * head_dim * element_size
    cache = (longest_prompt + n * max_new_tokens) * per_token
    prefill = 3 * (text.num_attention_heads * longest_prompt ** 2 * 4
                   + longest_prompt * getattr(text, "intermediate_size", 4 * text.hidden_size) * element_size)
    logits = 4 * n * text.vocab_size * 4
    fit = int(free_bytes * AUTO_BATCH_MEMORY_SHARE) // (cache + prefill + logits)
    return max(1, min(fit, max_rows // n))


def available_memory(device: str) -> int:
    """Bytes this process may still allocate: the GPU's free memory, or on a CPU the least of the
    system's available memory and what the job's cgroup (Slurm, containers) leaves."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    free = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, min(free)) if free else 8 << 30


def greedy_tokens(logits):
    """The most likely token of each row and its log-prob."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.argmax(dim=-1)
    return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1)


def preallocated_cache(config, capacity: int):
    """A `DynamicCache` whose full-attention layers write into buffers of `capacity` positions.

    `DynamicLayer.update` concatenates, copying a layer's whole cache for every new token:
    more than half of a CPU decoding step at batch 32. Rows leaving the batch are moved within
    the buffers rather than into new ones (fresh memory costs a page fault per 4 KiB written).
    Sliding-window (and other) layers are left as the model's config makes them.
    """
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                shape = (*key_states.shape[:2], max(capacity, key_states.shape[2]), key_states.shape[3])
                self.key_buffer, self.value_buffer = key_states.new_empty(shape), value_states.new_empty(shape)
                self.rows, self.length = shape[0], 0
            end = self.length + key_states.shape[2]
            if end > self.key_buffer.shape[2]:  # past the planned length: concatenate, as DynamicLayer does
                self.key_buffer = torch.cat([self.keys, key_states], dim=2)
                self.value_buffer = torch.cat([self.values, value_states], dim=2)
            else:
                self.key_buffer[: self.rows, :, self.length : end] = key_states
                self.value_buffer[: self.rows, :, self.length : end] = value_states
            self.length = end
            self._refresh_views()
            return self.keys, self.values

        def _refresh_views(self) -> None:
            self.keys = self.key_buffer[: self.rows, :, : self.length]
            self.values = self.value_buffer[: self.rows, :, : self.length]

        def batch_select_indices(self, indices) -> None:
            """Keep these rows, moved to the front of the buffers: only the filled positions are copied."""
            if self.is_initialized:
                self.key_buffer[: len(indices), :, : self.length] = self.keys[indices]
                self.value_buffer[: len(indices), :, : self.length] = self.values[indices]
                self.rows = len(indices)
                self._refresh_views()

    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def sequence_logprob(model, tokenizer, prompt: str, completion_ids: Sequence[int]) -> float:
    """Log p(completion | prompt) by one direct forward pass (the reference sampling's log-probs are tested against)."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=model.device)
    with torch.inference_mode():
        logits = model(ids).logits.float()
    logprobs = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1], dim=-1)
    return float(logprobs.gather(1, ids[0, len(prompt_ids) :, None]).sum())
