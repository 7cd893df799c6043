"""Logging for rule scripts: one short line per artifact, to the rule's log file and the terminal."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def rule_job(snakemake: Any) -> Iterator[None]:
    """Set up logging and thread counts for a Snakemake `script:` job; log any failure with its traceback."""
    threads = str(getattr(snakemake, "threads", 1))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=handlers, force=True)
    try:
        import torch

        torch.set_num_threads(int(threads))
    except ImportError:
        pass
    try:
        yield
    except Exception:
        logging.getLogger("envisions_flow").exception("rule %s failed", getattr(snakemake, "rule", "?"))
        raise
