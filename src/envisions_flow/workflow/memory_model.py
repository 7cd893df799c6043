"""Peak memory of one job of a GPU rule, from the model's shape: the arithmetic behind workflow/memory_plan.py.

Every figure is in bytes and is an estimate for dense decoder-only transformers (LLaMA, Mistral,
Qwen2, SmolLM2; mixtures of experts count every expert's weights). What is counted:

- training, per device: weights, gradients and AdamW state as the precision and ZeRO stage keep
  them (mixed precision keeps fp32 master weights: 4 + 4 + 8 bytes per parameter, plus the bf16
  copies autocast makes, plus DDP's gradient buckets on several processes; ZeRO-3 keeps
  2 + 2 + 12 bytes per parameter divided over the processes, plus the two layers it gathers);
  activations of `batch` sequences of `length` tokens (per layer and token 13h + 2·kv + 4·I values,
  or only the layer inputs under gradient checkpointing, plus one layer recomputed); the logits
  and their fp32 loss (14 bytes per token and vocabulary entry);
- sampling with the transformers backend: the 16-bit weights on one device, the KV cache (each
  prompt's once for its K samples, every sample's `max_new_tokens` preallocated), the prefill
  and the sampling step's transients;
- vLLM: the weights over the tensor-parallel GPUs, its runtime, and the KV cache of one sequence
  of `max_model_len` (vLLM refuses to start without room for it), against the share of memory
  it is given (`gpu_memory_utilization`);
- scoring (margins): 16-bit weights and one forward pass over a sequence of the model's context.

A prompt is taken to be as long as the model's context leaves beside `max_new_tokens`, at most
`PROMPT_TOKENS` (an upper bound for the few-shot, refine and MiniWob prompts; real ones are shorter). A rule fits when its estimate is at most `FIT_FRACTION` of a
GPU's memory (the rest is the CUDA context, allocator fragmentation and the estimate's own error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from envisions_flow.workflow.config import ConfigError

GIB = 1024**3
FIT_FRACTION = 0.8
# CUDA context, cuBLAS workspace and NCCL buffers of one process on one GPU
CUDA_RUNTIME = 1 * GIB
# one Python process with torch, its CUDA context and the tokenised data, in host memory
PROCESS_HOST = 3 * GIB
# vLLM beside weights and KV cache: the profiling pass's activations and CUDA graphs
VLLM_RUNTIME = 3 * GIB
VLLM_WORKER_HOST = 4 * GIB
# the longest prompt the sampling estimates assume, where the model's context would allow more
PROMPT_TOKENS = 4096
# ZeRO-3 gathers the layer it computes and prefetches the next one
ZERO3_LIVE_LAYERS = 2

PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on in a decoder-only transformer, read from its config.json."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    context: int
    tied_embeddings: bool = False
    attention_bias: bool = False
    experts: int = 1
    active_experts: int = 1

    REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "config.json") -> "ModelShape":
        """The shape in a Hugging Face config.json (its `text_config` for models that wrap a text decoder)."""
        text = config.get("text_config") or config
        missing = [key for key in cls.REQUIRED if not text.get(key)]
        if missing:
            raise ValueError(f"{source}: no {', '.join(missing)}; the memory plan needs a decoder-only "
                             "transformer's config.json")
        heads = int(text["num_attention_heads"])
        return cls(hidden=int(text["hidden_size"]), layers=int(text["num_hidden_layers"]), heads=heads,
                   kv_heads=int(text.get("num_key_value_heads") or heads),
                   head_dim=int(text.get("head_dim") or int(text["hidden_size"]) // heads),
                   intermediate=int(text["intermediate_size"]), vocab=int(text["vocab_size"]),
                   context=int(text.get("max_position_embeddings") or 4096),
                   tied_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
                   attention_bias=bool(text.get("attention_bias")) or text.get("model_type") == "qwen2",
                   experts=int(text.get("num_local_experts") or text.get("num_experts") or 1),
                   active_experts=int(text.get("num_experts_per_tok") or 1))

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "ModelShape":
        """The shape of a checkpoint on disk (its config.json)."""
        path = Path(model_dir) / "config.json"
        return cls.from_config(json.loads(path.read_text()), str(path))

    @property
    def layer_parameters(self) -> int:
        attention = 2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim
        if self.attention_bias:
            attention += (self.heads + 2 * self.kv_heads) * self.head_dim
        mlp = 3 * self.hidden * self.intermediate * self.experts + (self.hidden * self.experts if self.experts > 1 else 0)
        return attention + mlp + 2 * self.hidden  # two RMSNorm weights

    @property
    def parameters(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.layer_parameters + embeddings + self.hidden

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel: int = 1) -> int:
        """Keys and values of one token in every layer, on one of `tensor_parallel` GPUs (KV heads split or replicated)."""
        heads_per_gpu = max(1, self.kv_heads // tensor_parallel)
        return 2 * self.layers * heads_per_gpu * self.head_dim * dtype_bytes

    def activation_values_per_token(self, fp32_compute: bool) -> int:
        """Values one layer keeps per token for the backward pass (SDPA / FlashAttention: no attention matrix).

        Norms 5h each in mixed precision (their fp32 input and output, the 16-bit output), 3h in fp32;
        q, attention output and o_proj input h each; k, v; gate, act(gate), up and their product I each.
        """
        norms = 6 if fp32_compute else 10
        return (norms + 3) * self.hidden + 2 * self.kv_heads * self.head_dim + 4 * self.intermediate * self.active_experts


@dataclass(frozen=True)
class Estimate:
    """Peak memory of one job: on each of its GPUs (CPU jobs: in host memory) and in host memory per node."""

    device: int
    host: int
    parts: dict[str, int] = field(default_factory=dict)
    setting: str = ""
    budget: float = FIT_FRACTION  # share of a GPU's memory the estimate may take

    def fits(self, device_memory: int | None, host_memory: int | None) -> bool:
        device_ok = device_memory is None or self.device <= self.budget * device_memory
        return device_ok and (host_memory is None or self.host <= FIT_FRACTION * host_memory)


@dataclass(frozen=True)
class TrainingSetup:
    """How a training job holds the model: precision, ZeRO stage and offload, checkpointing, LoRA, a DPO reference."""

    precision: str = "bf16"
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    checkpointing: bool = False
    lora: Mapping[str, Any] | None = None
    quantized: bool = False
    reference: bool = False  # DPO: a frozen reference model in the compute dtype
    pairs: bool = False  # DPO and IPR: each example is a chosen and a rejected sequence

    def describe(self) -> str:
        parts = [self.precision if self.precision == "fp32" else f"{self.precision} mixed"]
        if self.zero_stage:
            offload = "+".join(name for name, on in (("optimizer", self.offload_optimizer),
                                                     ("params", self.offload_params)) if on)
            parts.append(f"ZeRO-{self.zero_stage}" + (f" offload {offload}" if offload else ""))
        if self.checkpointing:
            parts.append("checkpointing")
        if self.lora is not None:
            parts.append("QLoRA" if self.quantized else "LoRA")
        return ", ".join(parts)


def lora_parameters(shape: ModelShape, rank: int) -> int:
    """Adapter parameters of LoRA on every linear layer of every decoder layer (`target_modules: all-linear`)."""
    q_out, kv_out = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    pairs = [(shape.hidden, q_out), (shape.hidden, kv_out), (shape.hidden, kv_out), (q_out, shape.hidden),
             (shape.hidden, shape.intermediate), (shape.hidden, shape.intermediate), (shape.intermediate, shape.hidden)]
    return shape.layers * rank * sum(inputs + outputs for inputs, outputs in pairs)


def training_estimate(shape: ModelShape, setup: TrainingSetup, world: int, nodes: int, batch: int, length: int,
                      on_gpu: bool = True) -> Estimate:
    """Peak memory of one training rank (of `world`, over `nodes`) on `batch` sequences of `length` tokens."""
    P = shape.parameters
    mixed = setup.precision != "fp32"
    compute = PRECISION_BYTES[setup.precision]
    parts: dict[str, int] = {}
    host_extra = 0
    if setup.lora is not None:
        parts["frozen weights"] = P // 2 if setup.quantized else P * compute
        adapters = lora_parameters(shape, int(setup.lora.get("r", 16)))
        parts["adapters + AdamW"] = adapters * 16
    elif setup.zero_stage == 0:
        parts["weights"] = 4 * P  # fp32 master weights (mixed) or the fp32 model
        parts["gradients"] = 4 * P
        parts["AdamW"] = 8 * P
        if mixed:
            parts["16-bit weight copies"] = compute * P
        if world > 1:
            parts["DDP buckets"] = 4 * P
    else:
        optimizer = 12 * P // world  # ZeRO's fp32 copy (kept in fp32 training too) and two moments, partitioned
        if setup.offload_optimizer:
            host_extra += optimizer * (world // nodes)
        else:
            parts["AdamW + master"] = optimizer
        parts["gradients"] = compute * P // world if setup.zero_stage >= 2 else compute * P
        if setup.zero_stage == 3:
            weights = compute * P // world
            if setup.offload_params:
                host_extra += weights * (world // nodes)
            else:
                parts["weights"] = weights
            parts["gathered layers"] = ZERO3_LIVE_LAYERS * shape.layer_parameters * compute
        else:
            parts["weights"] = compute * P
    if setup.reference:
        parts["reference"] = compute * P // (world if setup.zero_stage == 3 else 1)
    tokens = batch * length * (2 if setup.pairs else 1)
    per_layer = shape.activation_values_per_token(fp32_compute=not mixed) * compute
    if setup.checkpointing:
        parts["activations"] = tokens * (shape.layers * shape.hidden * compute + per_layer)
    else:
        parts["activations"] = tokens * shape.layers * per_layer
    parts["logits + loss"] = tokens * shape.vocab * (compute + 12 if mixed else 12)
    if on_gpu:
        parts["CUDA runtime"] = CUDA_RUNTIME
    ranks_per_node = max(1, world // nodes)
    # every rank's process; rank 0 also holds the gathered 16-bit weights while it saves them
    host = ranks_per_node * PROCESS_HOST + compute * P + host_extra
    device = sum(parts.values())
    if not on_gpu:
        host += device
    return Estimate(device, host, parts, setup.describe())


def sampling_estimate(shape: ModelShape, batch_size: int, n: int, max_new_tokens: int, dtype_bytes: int,
                      models: int = 1, prompt_tokens: int | None = None, on_gpu: bool = True) -> Estimate:
    """The transformers backend: `n` samples per prompt, `batch_size` sequences decoded together, on one device.

    `models` > 1: other models held beside it in the same process (IPR's scorer).
    """
    prompts = max(1, batch_size // n)
    rows = prompts * n
    if prompt_tokens is None:
        prompt_tokens = min(PROMPT_TOKENS, max(0, shape.context - max_new_tokens))
    prompt = prompt_tokens
    parts = {"weights": models * shape.parameters * dtype_bytes,
             "KV cache": (prompts * prompt + rows * max_new_tokens) * shape.kv_bytes_per_token(dtype_bytes),
             # one layer's prefill over the prompts (hidden states, MLP values; on a CPU, SDPA's masked attention
             # also holds the scores) and the sampling step
             "prefill": prompts * prompt * (4 * shape.hidden + 3 * shape.intermediate) * dtype_bytes
                        + (0 if on_gpu else prompts * shape.heads * prompt * prompt * dtype_bytes),
             "sampling step": rows * shape.vocab * 4 * 4}
    if on_gpu:
        parts["CUDA runtime"] = CUDA_RUNTIME
    device = sum(parts.values())
    # the checkpoint is read into host memory in the model's dtype before it moves to the GPU
    host = PROCESS_HOST + (models * shape.parameters * dtype_bytes if on_gpu else device)
    return Estimate(device, host, parts, f"transformers, batch {batch_size}")


def vllm_estimate(shape: ModelShape, tensor_parallel: int, utilization: float, max_model_len: int,
                  dtype_bytes: int = 2) -> Estimate:
    """vLLM: what it needs on each GPU to start, against the share of memory it takes (`utilization`)."""
    parts = {"weights": shape.parameters * dtype_bytes // tensor_parallel,
             "KV cache of one sequence": max_model_len * shape.kv_bytes_per_token(dtype_bytes, tensor_parallel),
             "vLLM runtime": VLLM_RUNTIME + CUDA_RUNTIME}
    return Estimate(sum(parts.values()), PROCESS_HOST + tensor_parallel * VLLM_WORKER_HOST, parts,
                    f"vLLM, TP {tensor_parallel}, {utilization:.0%} of each GPU", budget=utilization)


def scoring_estimate(shape: ModelShape, dtype_bytes: int, on_gpu: bool = True) -> Estimate:
    """A forward pass over one sequence of the model's context (margins: log-probs of a⁺ and a⁻)."""
    tokens = shape.context
    parts = {"weights": shape.parameters * dtype_bytes,
             "forward pass": tokens * (4 * shape.hidden + 3 * shape.intermediate) * dtype_bytes,
             "log-probs": tokens * shape.vocab * (dtype_bytes + 8)}
    if on_gpu:
        parts["CUDA runtime"] = CUDA_RUNTIME
    device = sum(parts.values())
    return Estimate(device, PROCESS_HOST + (0 if on_gpu else device), parts, "forward, 16-bit" if on_gpu else "forward, fp32")


def tensor_parallel_size(shape: ModelShape, gpus: int, requested: int | None = None) -> int:
    """The GPUs vLLM splits the model over: the user's value, checked, or the largest that divides the heads.

    vLLM needs the attention heads divisible by it, and the KV heads either divisible by it or
    dividing it (they are replicated then).
    """
    def valid(size: int) -> bool:
        kv = shape.kv_heads
        return shape.heads % size == 0 and (kv % size == 0 or size % kv == 0)

    if requested is not None:
        if not valid(requested):
            divisors = [size for size in range(1, shape.heads + 1) if valid(size)]
            raise ValueError(f"generation.tensor_parallel_size: {requested} does not divide the model's "
                             f"{shape.heads} attention heads ({shape.kv_heads} KV heads); it may be one of "
                             f"{divisors}")
        if requested > max(1, gpus):
            raise ValueError(f"generation.tensor_parallel_size: {requested} GPUs wanted, the job sees {gpus}")
        return requested
    return max(size for size in range(1, max(1, gpus) + 1) if valid(size))


def model_shape(config: Mapping[str, Any], results: str | Path = "results") -> tuple[ModelShape | None, str]:
    """The model's shape and where it was read (or why it is unknown).

    From the converted base model, a local `model.path`, the Hugging Face cache for a hub id, the
    embedded GGUF file, or `memory_plan.architecture` (config.json's keys) when none can be read;
    a given architecture that disagrees with a config.json that can be read is an error.
    """
    given = (config.get("memory_plan") or {}).get("architecture")
    found = _config_json(config, Path(results))
    if found is None:
        if given:
            return ModelShape.from_config(given, "memory_plan.architecture"), "memory_plan.architecture"
        return None, ("the model's config.json cannot be read before it is downloaded: give memory_plan.architecture "
                      "(its hidden_size, num_hidden_layers, ...) or a local model.path")
    source, values = found
    shape = ModelShape.from_config(values, source)
    if given and ModelShape.from_config(given, "memory_plan.architecture") != shape:
        raise ConfigError(f"memory_plan.architecture disagrees with {source} ({ModelShape.from_config(given)} vs "
                          f"{shape}): remove it, or make it the model's")
    return shape, source


def _config_json(config: Mapping[str, Any], results: Path) -> tuple[str, dict[str, Any]] | None:
    from envisions_flow.workflow.models import resolve_source

    converted = results / "models" / "base" / "config.json"
    if converted.is_file():
        return str(converted), json.loads(converted.read_text())
    location, gguf_file = resolve_source(dict(config["model"]))
    if gguf_file:
        from transformers import AutoConfig

        return f"{location}/{gguf_file}", AutoConfig.from_pretrained(location, gguf_file=gguf_file).to_dict()
    local = Path(location) / "config.json"
    if local.is_file():
        return str(local), json.loads(local.read_text())
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(location, "config.json")
    except Exception:  # noqa: BLE001 - not an id the cache knows: the shape is unknown
        cached = None
    return (str(cached), json.loads(Path(cached).read_text())) if isinstance(cached, str) else None
