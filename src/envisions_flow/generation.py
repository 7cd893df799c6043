"""Generation backends: one interface, implementations chosen by config.

A backend turns chat messages into prompt text (the policy's own chat
template) and produces completions with the log-prob of every generated token
under the policy itself (temperature 1, no top-k/top-p truncation), which is
what the self-reward (paper Eq. 1) needs. A vLLM backend can implement the same
protocol without any rule changing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

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
    """Batched `generate` with KV cache on CPU or GPU, recording token log-probs on the fly."""

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
        torch = self.torch
        from transformers import LogitsProcessorList

        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        cache = None
        if n > 1:
            # The K samples of a prompt share its prefix: encode each prompt once, then repeat its KV cache K times
            # instead of letting `num_return_sequences` recompute the (long, few-shot) prompt K times.
            cache = self._prefill(input_ids, attention_mask)
            cache.batch_repeat_interleave(n)
            input_ids = input_ids.repeat_interleave(n, dim=0)
            attention_mask = attention_mask.repeat_interleave(n, dim=0)
        recorder = _TokenLogprobRecorder()
        torch.manual_seed(seed)
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                past_key_values=cache,
                do_sample=do_sample,
                temperature=1.0 if do_sample else None,
                top_k=0 if do_sample else None,
                top_p=1.0 if do_sample else None,
                max_new_tokens=max_new_tokens,
                logits_processor=LogitsProcessorList([recorder]),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        generated = sequences[:, input_ids.shape[1] :]
        token_logprobs = recorder.finish(generated)
        eos = self.tokenizer.eos_token_id
        out = []
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            length = ids.index(eos) + 1 if eos in ids else len(ids)
            text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
            out.append(Generation(text, tuple(ids[:length]), float(token_logprobs[row, :length].sum())))
        return out

    def _prefill(self, input_ids, attention_mask):
        """The KV cache of all prompt tokens but the last (generate feeds the last one itself)."""
        from transformers import DynamicCache

        torch = self.torch
        cache = DynamicCache(config=self.model.config)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            self.model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                       position_ids=position_ids[:, :-1], past_key_values=cache, use_cache=True)
        return cache


class _TokenLogprobRecorder:
    """A logits processor that keeps log p(token) of each sampled token, one step at a time.

    At step t it sees the raw logits and the tokens chosen up to t-1, so it
    gathers the probability of the previous choice and keeps only one
    distribution in memory (batch x vocab), never the whole score history.
    """

    def __init__(self) -> None:
        self.previous = None
        self.steps: list = []

    def __call__(self, input_ids, scores):
        import torch

        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated):
        import torch

        if self.previous is not None and generated.shape[1] > len(self.steps):
            self.steps.append(self.previous.gather(1, generated[:, len(self.steps) : len(self.steps) + 1]).squeeze(1))
        if not self.steps:
            return torch.zeros(generated.shape[0], 0)
        return torch.stack(self.steps, dim=1).cpu()


def sequence_logprob(model, tokenizer, prompt: str, completion_ids: Sequence[int]) -> float:
    """Log p(completion | prompt) by one direct forward pass (the reference the recorder is tested against)."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=model.device)
    with torch.inference_mode():
        logits = model(ids).logits.float()
    logprobs = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1], dim=-1)
    return float(logprobs.gather(1, ids[0, len(prompt_ids) :, None]).sum())


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
    raise ValueError(f"generation.backend: unknown backend {name!r} (available: transformers)")
