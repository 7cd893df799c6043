"""Generation backends: one interface, implementations chosen by config.

A backend turns chat messages into prompt text (the policy's own chat
template) and produces completions with the log-prob of every generated token
under the policy itself (temperature 1, no top-k/top-p truncation), which is
what the self-reward (paper Eq. 1) needs. `generation.backend: vllm` picks the
vLLM backend (GPUs) behind the same protocol; no rule changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from envisions_flow.environments.base import Messages

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


class BackendUnavailableError(ImportError):
    """The configured generation backend needs a package that is not installed."""


def load_backend(name: str, model_path: str | Path, **options) -> GenerationBackend:
    """The backend a config names."""
    from envisions_flow.generation.transformers_backend import TransformersBackend
    from envisions_flow.generation.vllm_backend import VLLMBackend

    if name == "transformers":
        return TransformersBackend(model_path, **options)
    if name == "vllm":
        return VLLMBackend(model_path, **options)
    raise ValueError(f"generation.backend: unknown backend {name!r} (available: transformers, vllm)")
