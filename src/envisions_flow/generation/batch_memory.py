"""How many prompts the transformers backend decodes together with `generation.batch_size: auto`:
every prompt of the call that fits in a share of the memory free when sampling starts."""

from __future__ import annotations

from pathlib import Path


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
