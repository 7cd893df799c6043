"""The report's environment page: the configuration and package versions a run was made with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from envisions_flow.workflow import artifacts as art

PACKAGES = ("envisions-flow", "snakemake", "torch", "transformers", "trl", "accelerate", "datasets", "pandas",
            "pyarrow", "clingo", "math-verify", "playwright", "miniwob", "matplotlib")


def environment(config: dict[str, Any], out: str | Path) -> None:
    """The configuration and package versions the report was built with, as Markdown."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    lines = ["## Environment", "", f"- Python {platform.python_version()} on {platform.platform()}"]
    for package in PACKAGES:
        try:
            lines.append(f"- {package} {version(package)}")
        except PackageNotFoundError:
            lines.append(f"- {package}: not installed")
    lines += ["", "## Configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    art.write_text("\n".join(lines), out)
