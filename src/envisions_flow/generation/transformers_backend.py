"""Batched decoding with transformers on CPU or GPU, recording each sampled token's log-prob.

The K samples of a prompt share its KV cache (SharedPrompts, cascade attention), the cache is
preallocated for the whole decode, and tokens are drawn by inverting the cumulative distribution:
benchmarks/README.md gives what each of these bought on a CPU. By default a batch holds every
sequence of the call that fits in memory (`batch_memory.auto_batch`), and each sequence draws its own stream of
uniforms (`draws.RowStreams`), so the batch never changes which samples a seed gives.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

from envisions_flow.environments.base import Messages
from envisions_flow.generation.base import Generation, render_chat
from envisions_flow.generation.batch_memory import AUTO_BATCH_ROWS, auto_batch, available_memory
from envisions_flow.generation.draws import RowStreams, draw_tokens, greedy_tokens

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

    def _prefill(self, ids: list[list[int]]):
        """Encode the prompts into one cache: (last position's logits, cache, attention mask, positions).

        Prompts that begin alike (a few-shot prompt's examples, a shared instruction) are encoded
        once up to their common prefix, whose keys and values every row then reads, and each row's
        own rest after it: a 500-token few-shot prefix before 60-token questions costs a tenth of
        encoding every prompt whole. The rests are padded on the left, so a row's padding lies
        between the prefix and its own tokens, masked out and skipped by the positions.
        """
        torch = self.torch
        from transformers import DynamicCache

        common = _common_prefix(ids) if len(ids) > 1 else 0
        common = min(common, min(len(row) for row in ids) - 1)  # every row keeps a token of its own to encode
        if common < MIN_SHARED_PREFIX:
            common = 0
        rests = [row[common:] for row in ids]
        width = max(len(row) for row in rests)
        pad = self.tokenizer.pad_token_id
        suffix = torch.tensor([[pad] * (width - len(row)) + row for row in rests], device=self.device)
        suffix_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rests], device=self.device)
        cache = DynamicCache(config=self.model.config)
        if common:
            prefix_cache = DynamicCache(config=self.model.config)
            self.model(input_ids=torch.tensor([ids[0][:common]], device=self.device),
                       position_ids=torch.arange(common, device=self.device)[None],
                       **{self.cache_keyword: prefix_cache}, use_cache=True, logits_to_keep=1)
            for index, layer in enumerate(prefix_cache.layers):  # every row reads the prefix's keys and values
                cache.update(layer.keys.expand(len(ids), -1, -1, -1), layer.values.expand(len(ids), -1, -1, -1), index)
        attention_mask = torch.cat([torch.ones(len(ids), common, dtype=suffix_mask.dtype, device=self.device),
                                    suffix_mask], dim=1)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=suffix, attention_mask=attention_mask, position_ids=positions[:, common:],
                            **{self.cache_keyword: cache}, use_cache=True, logits_to_keep=1).logits[:, -1]
        return logits, cache, attention_mask, positions

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

        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        longest = max(len(row) for row in ids)
        eos = self.stop_ids
        for layer in DynamicCache(config=self.model.config).layers:
            window = getattr(layer, "sliding_window", None)
            if window is not None and longest + max_new_tokens > window:
                raise ValueError(
                    f"{type(self.model).__name__} attends within windows of {window} tokens, and prompts of "
                    f"{longest} tokens plus max_new_tokens={max_new_tokens} exceed one: the "
                    "transformers backend attends to whole prompts; lower generation.max_new_tokens or sample with "
                    "generation.backend: vllm")
        with torch.inference_mode():
            logits, prompt_cache, attention_mask, positions = self._prefill(ids)
            logits = logits.repeat_interleave(n, dim=0)
            shared = SharedPrompts(prompt_cache, attention_mask, n)
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


# Shortest common prefix (tokens) that prompts are encoded over once: below it, the extra forward pass
# costs more than it saves.
MIN_SHARED_PREFIX = 32


def _common_prefix(ids: list[list[int]]) -> int:
    """Tokens every prompt begins with."""
    first, length = ids[0], min(len(row) for row in ids)
    for row in ids[1:]:
        length = next((i for i in range(length) if row[i] != first[i]), length)
    return length


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
