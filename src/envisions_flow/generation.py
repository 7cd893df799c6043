"""Generation backends: one interface, implementations chosen by config.

A backend turns chat messages into prompt text (the policy's own chat
template) and produces completions with the log-prob of every generated token
under the policy itself (temperature 1, no top-k/top-p truncation), which is
what the self-reward (paper Eq. 1) needs. `generation.backend: vllm` picks the
vLLM backend (GPUs) behind the same protocol; no rule changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from .environments.base import Messages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One completion and its log-probability under the policy that wrote it."""

    text: str
    token_ids: tuple[int, ...]
    logprob_sum: float
    # tokens counted by a remote model whose token ids we do not have (teacher endpoints)
    token_count: int | None = None

    @property
    def n_tokens(self) -> int:
        return self.token_count if self.token_count is not None else len(self.token_ids)

    @property
    def self_reward(self) -> float:
        """Mean token log-prob (paper Eq. 1); -inf for an empty completion."""
        return self.logprob_sum / self.n_tokens if self.n_tokens else float("-inf")


class GenerationBackend(Protocol):
    """What the sampling and evaluation rules need from a model server."""

    def render(self, messages: Messages) -> str:
        """The prompt text for chat messages, ending where the assistant's answer starts."""

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, seed: int) -> list[list[Generation]]:
        """n independent samples per prompt at temperature 1, no truncation."""

    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        """One greedy completion per prompt."""


def render_chat(tokenizer, messages: Messages) -> str:
    """Apply the policy's chat template; shared by sampling and training so both see the same prompt."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class TransformersBackend:
    """Batched decoding with KV cache on CPU or GPU, recording token log-probs on the fly."""

    def __init__(self, model_path: str | Path, batch_size: int = 16, dtype: str = "auto", progress: bool = True):
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
        per_batch = max(1, self.batch_size // n)
        results: list[Generation | None] = [None] * (len(prompts) * n)
        with tqdm(total=len(prompts) * n, desc=desc, unit="seq", disable=not self.progress) as bar:
            for batch_index, start in enumerate(range(0, len(order), per_batch)):
                indices = order[start : start + per_batch]
                generations = self._generate([prompts[i] for i in indices], n, max_new_tokens,
                                             seed + batch_index, do_sample)
                for position, prompt_index in enumerate(indices):
                    for k in range(n):
                        results[prompt_index * n + k] = generations[position * n + k]
                bar.update(len(indices) * n)
        return results

    def _generate(self, prompts: list[str], n: int, max_new_tokens: int, seed: int, do_sample: bool):
        """n completions per prompt, decoded step by step with the KV cache.

        Written out rather than `model.generate` for three reasons that matter on a CPU:
        each prompt is encoded once and its cache repeated for its n samples; a finished
        sequence leaves the batch at once instead of being computed (as padding) until the
        longest one ends; and the log-prob of each chosen token comes from the very
        distribution it was drawn from (temperature 1, no top-k/top-p), no second pass.
        """
        torch = self.torch

        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        attention_mask = encoded["attention_mask"]
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = preallocated_cache(self.model.config, attention_mask.shape[1] + max_new_tokens)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            logits = self.model(input_ids=encoded["input_ids"], attention_mask=attention_mask, position_ids=positions,
                                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            if n > 1:
                cache.batch_repeat_interleave(n)
                logits, attention_mask = logits.repeat_interleave(n, dim=0), attention_mask.repeat_interleave(n, dim=0)
                positions = positions.repeat_interleave(n, dim=0)
            next_position = positions[:, -1] + 1
            live = list(range(logits.shape[0]))  # the output row of each row still in the batch
            tokens: list[list[int]] = [[] for _ in live]
            logprob_sums = [0.0] * len(live)
            for step in range(max_new_tokens):
                chosen, picked = (draw_tokens(logits, generator) if do_sample else greedy_tokens(logits))
                keep = []
                for position, (row, token, logprob) in enumerate(zip(live, chosen.tolist(), picked.tolist())):
                    tokens[row].append(token)
                    logprob_sums[row] += logprob
                    if token != eos:
                        keep.append(position)
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(live):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    live = [live[i] for i in keep]
                    chosen, attention_mask, next_position = chosen[index], attention_mask[index], next_position[index]
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(live), 1)], dim=1)
                logits = self.model(input_ids=chosen[:, None], attention_mask=attention_mask,
                                    position_ids=next_position[:, None], past_key_values=cache,
                                    use_cache=True).logits[:, -1]
                next_position = next_position + 1
        return [Generation(self.tokenizer.decode(ids, skip_special_tokens=True), tuple(ids), total)
                for ids, total in zip(tokens, logprob_sums)]


def draw_tokens(logits, generator):
    """One token per row drawn from softmax(logits), and its log-prob under that very distribution.

    By inverting the cumulative distribution with one uniform draw per row: `torch.multinomial`
    draws an exponential variate for every vocabulary entry (49k per row), a fifth of a CPU
    decoding step at batch 32. `right=True` never lands on a zero-probability token.
    """
    import torch

    probabilities = torch.softmax(logits.float(), dim=-1)
    cumulative = probabilities.cumsum(dim=-1)
    draws = torch.rand(len(cumulative), 1, generator=generator, device=cumulative.device) * cumulative[:, -1:]
    chosen = torch.searchsorted(cumulative, draws, right=True).squeeze(1).clamp_(max=cumulative.shape[1] - 1)
    return chosen, probabilities.gather(1, chosen[:, None]).squeeze(1).log()


def greedy_tokens(logits):
    """The most likely token of each row and its log-prob."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.argmax(dim=-1)
    return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1)


def preallocated_cache(config, capacity: int):
    """A `DynamicCache` whose full-attention layers write into buffers of `capacity` positions.

    `DynamicLayer.update` concatenates, copying a layer's whole cache for every new token:
    more than half of a CPU decoding step at batch 32. Sliding-window (and other) layers are
    left as the model's config makes them.
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
                self.length = 0
            end = self.length + key_states.shape[2]
            if end > self.key_buffer.shape[2]:  # past the planned length: concatenate, as DynamicLayer does
                self.key_buffer = torch.cat([self.key_buffer[:, :, : self.length], key_states], dim=2)
                self.value_buffer = torch.cat([self.value_buffer[:, :, : self.length], value_states], dim=2)
            else:
                self.key_buffer[:, :, self.length : end] = key_states
                self.value_buffer[:, :, self.length : end] = value_states
            self.length = end
            self._refresh_views()
            return self.keys, self.values

        def _refresh_views(self) -> None:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
                self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
                self._refresh_views()

        def batch_select_indices(self, indices) -> None:
            if self.is_initialized:
                self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
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


class BackendUnavailableError(ImportError):
    """The configured generation backend needs a package that is not installed."""


# vLLM's own default; in code rather than in config/schema.yaml, so the params of finished runs stay as they were
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


def cuda_visible_device_count(env: dict[str, str] | None = None) -> int:
    """GPUs the job was given (CUDA_VISIBLE_DEVICES, as Slurm and most schedulers set it); 1 when unset."""
    import os

    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return 1
    return max(1, len([device for device in visible.split(",") if device.strip() and device.strip() != "-1"]))


class VLLMBackend:
    """vLLM on GPUs: continuous batching, paged KV cache, prefix caching (the K samples of a prompt share it).

    Token log-probs are vLLM's log-probs of the sampled tokens under the raw model distribution
    (`logprobs_mode="raw_logprobs"`, before temperature or top-k/top-p). vLLM versions without that
    engine argument return the distribution after their processors; at temperature 1 without
    truncation, which is how this backend samples, that is the same distribution.
    """

    def __init__(self, model_path: str | Path, batch_size: int = 32, dtype: str = "auto", progress: bool = True,
                 tensor_parallel_size: int | None = None, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None) -> None:
        # batch_size is accepted for the common interface only: vLLM schedules its own batches
        try:
            import vllm
        except ImportError as error:
            raise BackendUnavailableError(
                f"generation.backend: 'vllm' needs the vllm package, which cannot be imported here ({error}). "
                "Install it on a CUDA machine (`pip install 'envisions-flow[vllm]'`) or set "
                "generation.backend: transformers") from error
        from transformers import AutoTokenizer

        self.vllm = vllm
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        engine: dict[str, Any] = {
            "model": str(model_path), "tokenizer": str(model_path), "dtype": dtype, "seed": 0,
            "enable_prefix_caching": True,
            "tensor_parallel_size": int(tensor_parallel_size or cuda_visible_device_count()),
            "gpu_memory_utilization": float(gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION),
        }
        if max_model_len:
            engine["max_model_len"] = int(max_model_len)
        if _engine_accepts("logprobs_mode"):
            engine["logprobs_mode"] = "raw_logprobs"
        self.llm = vllm.LLM(**engine)
        self.progress = progress

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, seed: int) -> list[list[Generation]]:
        import random

        # one seed per prompt; vLLM gives the k-th of its n samples seed + k
        seeds = random.Random(seed).sample(range(2**31 - n), len(prompts))
        # logprobs=1: the top token's and the sampled one's (0, the sampled one's alone, is skipped by some versions)
        params = [self.vllm.SamplingParams(n=n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=max_new_tokens,
                                           seed=prompt_seed, logprobs=1) for prompt_seed in seeds]
        return self._run(prompts, params)

    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        params = self.vllm.SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens, logprobs=1)
        return [group[0] for group in self._run(prompts, [params] * len(prompts))]

    def _run(self, prompts: Sequence[str], params: list) -> list[list[Generation]]:
        # tokenized here as by the transformers backend and training (no BOS added to the rendered chat)
        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], sampling_params=params,
                                    use_tqdm=self.progress)
        return [[self._generation(completion) for completion in sorted(output.outputs, key=lambda c: c.index)]
                for output in outputs]

    def _generation(self, completion: Any) -> Generation:
        ids = tuple(int(token) for token in completion.token_ids)
        steps = completion.logprobs or []
        if len(steps) != len(ids):
            raise RuntimeError(f"vLLM returned {len(steps)} token log-probs for {len(ids)} tokens")
        logprob_sum = float(sum(step[token].logprob for token, step in zip(ids, steps)))
        return Generation(self.tokenizer.decode(ids, skip_special_tokens=True), ids, logprob_sum)


def _engine_accepts(argument: str) -> bool:
    """Whether the installed vLLM's engine takes `argument` (logprobs_mode came in 2025)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return argument in {field.name for field in dataclasses.fields(EngineArgs)}


class TeacherError(RuntimeError):
    """The teacher endpoint refused or failed a request."""


class OpenAIChatBackend:
    """A teacher behind any OpenAI-compatible chat endpoint (distill-then-finetune), answers cached on disk.

    Prompts are the chat messages themselves (as JSON): the teacher applies its
    own template. Every answer is appended to a JSONL cache as soon as it
    arrives, keyed by endpoint, model and request, so a resumed or repeated run
    never pays for the same request twice. Token log-probs are requested; where
    the endpoint gives none, the self-reward is NaN (nothing downstream ranks
    a teacher's single answer).
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 cache_dir: str | Path = "results/teacher_cache", concurrency: int = 4, progress: bool = True):
        import os

        from openai import OpenAI

        self.base_url, self.model = base_url, model
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "unset", max_retries=5)
        digest = hashlib.sha256(f"{base_url}\n{model}".encode()).hexdigest()[:16]
        self.cache_path = Path(cache_dir) / f"{digest}.jsonl"
        self.cache = self._load_cache()
        self.concurrency = concurrency
        self.progress = progress
        self.requests = 0
        self._lock = threading.Lock()

    def _load_cache(self) -> dict[str, list[dict]]:
        cache: dict[str, list[dict]] = {}
        if self.cache_path.exists():
            for line in self.cache_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that request is simply made again
                cache[entry["key"]] = entry["choices"]
        return cache

    def render(self, messages: Messages) -> str:
        return json.dumps(messages, ensure_ascii=False)

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int, seed: int) -> list[list[Generation]]:
        return self._run(prompts, n, max_new_tokens, 1.0, seed)

    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        return [choices[0] for choices in self._run(prompts, 1, max_new_tokens, 0.0, 0)]

    def _run(self, prompts: Sequence[str], n: int, max_new_tokens: int, temperature: float,
             seed: int) -> list[list[Generation]]:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        def one(prompt: str) -> list[Generation]:
            request = {"model": self.model, "messages": json.loads(prompt), "n": n, "max_tokens": max_new_tokens,
                       "temperature": temperature, "seed": seed}
            key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
            if key not in self.cache:
                choices = self._request(request)
                with self._lock:
                    self.cache[key] = choices
                    self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                    with self.cache_path.open("a") as cache_file:
                        cache_file.write(json.dumps({"key": key, "choices": choices}) + "\n")
            return [Generation(c["text"], (), c["logprob_sum"], c["n_tokens"]) for c in self.cache[key]]

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(tqdm(pool.map(one, prompts), total=len(prompts), desc="teacher", unit="prompt",
                             disable=not self.progress))

    def _request(self, request: dict) -> list[dict]:
        import openai

        try:
            response = self.client.chat.completions.create(**request, logprobs=True)
        except openai.APIError as error:
            raise TeacherError(f"teacher {self.model!r} at {self.base_url}: {error}") from None
        with self._lock:
            self.requests += 1
        choices = []
        for choice in response.choices:
            tokens = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
            count = len(tokens) if tokens else (response.usage.completion_tokens // len(response.choices)
                                                if response.usage else 0)
            choices.append({"text": choice.message.content or "", "n_tokens": count,
                             "logprob_sum": sum(t.logprob for t in tokens) if tokens else float("nan")})
        return choices


def load_backend(name: str, model_path: str | Path, **options) -> GenerationBackend:
    """The backend a config names."""
    if name == "transformers":
        return TransformersBackend(model_path, **options)
    if name == "vllm":
        return VLLMBackend(model_path, **options)
    raise ValueError(f"generation.backend: unknown backend {name!r} (available: transformers, vllm)")
