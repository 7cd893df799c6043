"""vLLM on GPUs behind the same backend protocol (`generation.backend: vllm`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from envisions_flow.environments.base import Messages
from envisions_flow.generation.base import BackendUnavailableError, Generation, render_chat
from envisions_flow.workflow.memory_model import ModelShape, tensor_parallel_size as choose_tensor_parallel_size

log = logging.getLogger(__name__)


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

    Tensor parallelism is the user's value, checked, or the largest number of the job's GPUs that
    divides the model's attention heads. `engines` is how many vLLM engines this process starts
    (IPR's scorer beside the policy): each takes that share of `gpu_memory_utilization`, so the
    shares add up instead of each engine asking for 90% of every GPU.
    """

    def __init__(self, model_path: str | Path, batch_size: int = 32, dtype: str = "auto", progress: bool = True,
                 tensor_parallel_size: int | None = None, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None, engines: int = 1) -> None:
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
        shape = ModelShape.from_dir(model_path)
        engine: dict[str, Any] = {
            "model": str(model_path), "tokenizer": str(model_path), "dtype": dtype, "seed": 0,
            "enable_prefix_caching": True,
            "tensor_parallel_size": choose_tensor_parallel_size(shape, cuda_visible_device_count(), tensor_parallel_size),
            "gpu_memory_utilization": float(gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION) / engines,
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
