"""The vLLM backend: a clear error where vllm is missing; on a machine with vllm, the real embedded model."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest

from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.generation.base import BackendUnavailableError, load_backend
from envisions_flow.generation.transformers_backend import sequence_logprob
from envisions_flow.generation.vllm_backend import VLLMBackend, cuda_visible_device_count
from envisions_flow.stages import common as stages
from envisions_flow.stages.settings import Backend, resolve

QUESTIONS = ["Ava has 3 apples and gets 4 more. How many apples does she have?",
             "A box holds 6 eggs. How many eggs are in 5 boxes?"]


def test_without_vllm_the_error_names_the_config_key(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails, as where it is not installed
    with pytest.raises(BackendUnavailableError, match=r"generation\.backend: 'vllm' needs the vllm package") as error:
        load_backend("vllm", tmp_path, batch_size=8, dtype="auto")
    assert "generation.backend: transformers" in str(error.value)
    assert isinstance(error.value, ImportError)


def test_unknown_backend_lists_both():
    with pytest.raises(ValueError, match="available: transformers, vllm"):
        load_backend("tgi", "unused")


def test_vllm_options_reach_the_backend_only_when_set(monkeypatch):
    calls = []
    monkeypatch.setattr(stages, "load_backend", lambda name, path, **options: calls.append((name, options)))
    generation = {"backend": "vllm", "batch_size": 8, "dtype": "bfloat16", "seed": 0}
    stages.backend_for(resolve(Backend, {**generation, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5}), "m")
    stages.backend_for(resolve(Backend, generation), "m")
    stages.backend_for(resolve(Backend, {**generation, "backend": "transformers", "tensor_parallel_size": 2}), "m")
    assert calls == [("vllm", {"batch_size": 8, "dtype": "bfloat16", "tensor_parallel_size": 2,
                               "gpu_memory_utilization": 0.5}),
                     ("vllm", {"batch_size": 8, "dtype": "bfloat16"}),
                     ("transformers", {"batch_size": 8, "dtype": "bfloat16"})]


def test_tensor_parallel_size_follows_the_gpus_given_to_the_job():
    assert cuda_visible_device_count({}) == 1
    assert cuda_visible_device_count({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}) == 4
    assert cuda_visible_device_count({"CUDA_VISIBLE_DEVICES": "2"}) == 1
    assert cuda_visible_device_count({"CUDA_VISIBLE_DEVICES": ""}) == 1


# On a machine where vllm imports (a CUDA GPU): the real embedded model, checked against a direct forward pass.
# (skipif before any fixture, so that a machine without vllm does not convert the model for nothing)
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

@pytest.fixture(scope="module")
def vllm_backend(base_model):
    pytest.importorskip("vllm")
    # float32 so that the log-probs can be compared with a float32 forward pass at a tight tolerance
    return VLLMBackend(base_model, dtype="float32", gpu_memory_utilization=0.4, max_model_len=2048, progress=False)


@pytest.fixture(scope="module")
def reference(base_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(base_model))


def _prompts(backend, few_shot):
    env = MathEnvironment()
    return [backend.render(env.explore_prompt(Task(str(i), q, ""), few_shot)) for i, q in enumerate(QUESTIONS)]


@pytest.mark.slow
@needs_vllm
def test_k_samples_per_prompt_with_the_policys_own_log_probs(vllm_backend, reference):
    model, tokenizer = reference
    prompts = _prompts(vllm_backend, few_shot=True)
    samples = vllm_backend.sample(prompts, n=3, max_new_tokens=40, seed=11)
    assert [len(group) for group in samples] == [3, 3]
    for prompt, group in zip(prompts, samples):
        assert len({generation.token_ids for generation in group}) > 1  # K independent samples, not one repeated
        for generation in group:
            assert generation.n_tokens > 0
            expected = sequence_logprob(model, tokenizer, prompt, generation.token_ids)
            assert generation.logprob_sum == pytest.approx(expected, abs=5e-3 * generation.n_tokens)
            assert generation.self_reward < 0
            assert generation.text == tokenizer.decode(generation.token_ids, skip_special_tokens=True)


@pytest.mark.slow
@needs_vllm
def test_sampling_is_seeded_and_greedy_is_deterministic(vllm_backend, reference):
    model, tokenizer = reference
    prompts = _prompts(vllm_backend, few_shot=False)
    first = vllm_backend.sample(prompts, n=2, max_new_tokens=16, seed=5)
    second = vllm_backend.sample(prompts, n=2, max_new_tokens=16, seed=5)
    assert [[g.token_ids for g in group] for group in first] == [[g.token_ids for g in group] for group in second]
    greedy = vllm_backend.greedy(prompts, max_new_tokens=16)
    assert [g.token_ids for g in greedy] == [g.token_ids for g in vllm_backend.greedy(prompts, max_new_tokens=16)]
    for prompt, generation in zip(prompts, greedy):
        assert math.isfinite(generation.logprob_sum)
        expected = sequence_logprob(model, tokenizer, prompt, generation.token_ids)
        assert generation.logprob_sum == pytest.approx(expected, abs=5e-3 * generation.n_tokens)


def _stand_in_vllm(monkeypatch, seen: dict, logprobs_mode: bool) -> None:
    """A module with vLLM's API as the backend uses it, recording what it is asked (the real one needs a GPU)."""
    import dataclasses
    import types

    fields = [("model", str, "")] + ([("logprobs_mode", str, "raw_logprobs")] if logprobs_mode else [])
    engine_args = dataclasses.make_dataclass("EngineArgs", fields)

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, **engine):
            seen["engine"] = engine

        def generate(self, prompts, sampling_params, use_tqdm):
            seen["prompts"], seen["params"] = prompts, sampling_params
            logprob = types.SimpleNamespace
            # each sample: token 10 + k, then EOS (2); the top-1 entry (99) must not be mistaken for the sampled one
            return [types.SimpleNamespace(outputs=[
                types.SimpleNamespace(index=k, token_ids=[10 + k, 2],
                                      logprobs=[{99: logprob(logprob=-0.1), 10 + k: logprob(logprob=-0.5 - k)},
                                                {2: logprob(logprob=-0.25)}])
                for k in reversed(range(params.n))]) for params in sampling_params]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    arg_utils = types.ModuleType("vllm.engine.arg_utils")
    arg_utils.EngineArgs = engine_args
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.engine", types.ModuleType("vllm.engine"))
    monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", arg_utils)


@pytest.mark.slow
@pytest.mark.parametrize("has_logprobs_mode", [True, False])
def test_the_adapter_asks_for_k_seeded_samples_and_sums_the_sampled_tokens(monkeypatch, base_model,
                                                                          has_logprobs_mode):
    seen: dict = {}
    _stand_in_vllm(monkeypatch, seen, has_logprobs_mode)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    backend = load_backend("vllm", base_model, batch_size=8, dtype="bfloat16")
    engine = seen["engine"]
    # SmolLM2's 9 attention heads (3 KV heads): of 4 GPUs, 3 divide them
    assert engine["enable_prefix_caching"] is True and engine["tensor_parallel_size"] == 3
    assert engine["dtype"] == "bfloat16" and engine["gpu_memory_utilization"] == 0.9
    assert engine.get("logprobs_mode") == ("raw_logprobs" if has_logprobs_mode else None)

    prompts = _prompts(backend, few_shot=False)
    samples = backend.sample(prompts, n=3, max_new_tokens=40, seed=11)
    assert seen["prompts"] == [{"prompt_token_ids": backend.tokenizer(p, add_special_tokens=False)["input_ids"]}
                               for p in prompts]
    for params in seen["params"]:
        assert (params.n, params.temperature, params.top_p, params.top_k, params.max_tokens, params.logprobs) == \
            (3, 1.0, 1.0, -1, 40, 1)
    seeds = [params.seed for params in seen["params"]]
    assert len(set(seeds)) == 2 and min(seeds) >= 0
    assert [[g.token_ids for g in group] for group in samples] == [[(10, 2), (11, 2), (12, 2)]] * 2
    assert [g.logprob_sum for g in samples[0]] == [-0.75, -1.75, -2.75]
    assert samples[0][0].text == backend.tokenizer.decode([10, 2], skip_special_tokens=True)
    backend.sample(prompts, n=3, max_new_tokens=40, seed=11)
    assert [params.seed for params in seen["params"]] == seeds

    load_backend("vllm", base_model, batch_size=8, dtype="bfloat16", engines=2)  # IPR's scorer beside the policy
    assert seen["engine"]["gpu_memory_utilization"] == 0.45
    with pytest.raises(ValueError, match="generation.tensor_parallel_size: 2 does not divide the model's 9 attention"):
        load_backend("vllm", base_model, batch_size=8, dtype="bfloat16", tensor_parallel_size=2)

    greedy = backend.greedy(prompts, max_new_tokens=16)
    assert [(p.n, p.temperature, p.max_tokens, p.logprobs) for p in seen["params"]] == [(1, 0.0, 16, 1)] * 2
    assert [g.token_ids for g in greedy] == [(10, 2)] * 2
