"""A teacher behind an OpenAI-compatible chat endpoint, for distill-then-finetune and agent experts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Sequence

from envisions_flow.environments.base import Messages
from envisions_flow.generation.base import Generation

log = logging.getLogger(__name__)


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
