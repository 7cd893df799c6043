"""Progress of long stages kept in shards, so that a killed job resumes where it stopped.

A stage that maps many inputs to rows (prompts to samples, programs to verdicts) works through
them a shard at a time and writes each finished shard as Parquet under `<output>.shards/`, named
by a fingerprint of everything that decides its rows (the inputs, the settings, the model's files).
When the job runs again (Snakemake removes the incomplete output, not this directory), finished
shards are read back and only the rest is computed. Each shard draws from its own seed, so the
rows are the same whether or not the job was interrupted. The directory goes once the output
is written; shards of another fingerprint (a changed config or model) are never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pandas as pd
import pyarrow as pa

from envisions_flow.workflow import artifacts as art

log = logging.getLogger(__name__)

T = TypeVar("T")


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (inputs, settings, `files_signature` of a model)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def files_signature(directory: str | Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of every file under a directory: a model retrained in place changes it."""
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted((str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns)
                  for path in root.rglob("*") if path.is_file())


def map_in_shards(items: Sequence[T], shard_size: int, output: str | Path, schema: pa.Schema, key: str,
                  work: Callable[[Sequence[T], int], list[dict[str, Any]]]) -> pd.DataFrame:
    """`work(shard, shard_index)` over consecutive shards of `items`, each result kept on disk
    until the whole output is written; returns all rows in order."""
    directory = Path(f"{output}.shards")
    for stale in directory.glob("*.parquet"):
        if not stale.name.startswith(f"{key}-"):
            stale.unlink()
    frames, resumed = [], 0
    for index, start in enumerate(range(0, len(items), shard_size)):
        path = directory / f"{key}-{index:05d}.parquet"
        if path.exists():
            try:
                frames.append(art.read_table(path, schema))
                resumed += 1
                continue
            except art.ArtifactError:
                path.unlink()  # unreadable (a full disk, say): compute it again
        art.write_table(work(items[start:start + shard_size], index), path, schema)
        frames.append(art.read_table(path, schema))  # as a resumed shard would be: the same types either way
    if resumed:
        log.info("%s: resumed %d of %d finished shards", output, resumed, len(frames))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in schema.names})
    return pd.concat(frames, ignore_index=True)


def clear(output: str | Path) -> None:
    """Remove the shards of an output once the output itself is written."""
    shutil.rmtree(f"{output}.shards", ignore_errors=True)
