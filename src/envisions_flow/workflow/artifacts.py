"""Typed Parquet artifacts passed between rules, written atomically.

Every rule output is declared here with a pyarrow schema, so a reader can
trust the columns it gets and a half-written file never looks finished: data
goes to a temporary file in the same directory and is renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TASKS = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("source", pa.string()),
    ]
)

# One row per generated completion (explore samples, refinements, eval predictions).
GENERATIONS = pa.schema(
    [
        ("id", pa.string()),
        ("sample_idx", pa.int32()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("program", pa.string()),
        ("n_tokens", pa.int32()),
        ("logprob_sum", pa.float64()),
        ("self_reward", pa.float64()),
        ("source_program", pa.string()),
    ]
)

EXECUTIONS = pa.schema(
    [
        ("id", pa.string()),
        ("sample_idx", pa.int32()),
        ("b", pa.int8()),
        ("value", pa.string()),
        ("error_class", pa.string()),
        ("duration_s", pa.float64()),
    ]
)

POOL = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("program", pa.string()),
        ("program_key", pa.string()),
        ("b", pa.int8()),
        ("self_reward", pa.float64()),
        ("origin", pa.string()),
        ("iteration", pa.int32()),
        ("sample_idx", pa.int32()),
    ]
)

U1 = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("rank", pa.int32()),
        ("positive", pa.string()),
        ("self_reward", pa.float64()),
    ]
)

U2 = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("rank", pa.int32()),
        ("positive", pa.string()),
        ("negative", pa.string()),
        ("positive_reward", pa.float64()),
        ("negative_reward", pa.float64()),
    ]
)

EVAL = pa.schema(
    [
        ("testset", pa.string()),
        ("id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("completion", pa.string()),
        ("program", pa.string()),
        ("value", pa.string()),
        ("b", pa.int8()),
        ("error_class", pa.string()),
        # inference-time self-refinement (eval.self_refine): one refine pass on the prediction; null when off
        ("refined_program", pa.string()),
        ("refined_b", pa.int8()),
    ]
)

# The policy's own verdict on each sample (Self-Rewarding): mean rubric score 0-5, null when unparsable.
JUDGMENTS = pa.schema(
    [
        ("id", pa.string()),
        ("sample_idx", pa.int32()),
        ("score", pa.float64()),
        ("judgment", pa.string()),
    ]
)

# Δlog p (paper Fig. 5b): per-token log-probs of a⁺ and a⁻ of each U2 pair under a checkpoint.
MARGINS = pa.schema(
    [
        ("id", pa.string()),
        ("rank", pa.int32()),
        ("positive_logp", pa.float64()),
        ("negative_logp", pa.float64()),
        ("margin", pa.float64()),
    ]
)

# One row per iteration of a run: accuracy, exploration (Appendix B), Δlog p and diversity.
ANALYSIS = pa.schema(
    [
        ("domain", pa.string()),
        ("run", pa.string()),
        ("method", pa.string()),
        ("iteration", pa.int32()),
        ("average_accuracy", pa.float64()),
        ("solved", pa.int32()),
        ("newly_solved", pa.int32()),
        ("exploratory_ability", pa.float64()),
        ("stability", pa.float64()),
        ("exploratory_ability_cumulative", pa.float64()),
        ("stability_cumulative", pa.float64()),
        ("delta_logp", pa.float64()),
        ("correct_unique", pa.int32()),
    ]
)


# Step-mode episodes (agents.py): one row per step, in step order within an episode.
TRAJECTORIES = pa.schema(
    [
        ("episode_id", pa.string()),
        ("task_id", pa.string()),
        ("step", pa.int32()),
        ("observation", pa.string()),
        ("thought", pa.string()),
        ("action", pa.string()),
        ("reward", pa.float64()),
        ("done", pa.bool_()),
        ("error_class", pa.string()),
    ]
)


class ArtifactError(ValueError):
    """An artifact on disk is missing, unreadable or has the wrong columns."""


def _atomic_target(path: Path) -> tuple[int, str]:
    """A temporary file beside `path`, with the permissions a plain open() would give (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def write_table(frame: pd.DataFrame | list[dict[str, Any]], path: str | Path, schema: pa.Schema) -> None:
    """Write rows as Parquet with exactly `schema`, atomically."""
    path = Path(path)
    if not isinstance(frame, pd.DataFrame):
        names = set(schema.names)
        incomplete = next((row for row in frame if not names <= row.keys()), None)
        if incomplete is not None:
            raise ArtifactError(f"{path}: rows lack columns {sorted(names - incomplete.keys())}")
        frame = pd.DataFrame(frame, columns=schema.names)
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: rows lack columns {missing}")
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: str | Path, schema: pa.Schema) -> pd.DataFrame:
    """Read a Parquet artifact, failing with the file's name if it is corrupt or mistyped."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as error:
        raise ArtifactError(f"{path}: not a readable Parquet file ({error}); delete it and re-run") from None
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: missing columns {missing}; delete it and re-run")
    try:
        return table.select(schema.names).cast(schema).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ArtifactError(f"{path}: columns have the wrong types ({error})") from None


def write_text(text: str, path: str | Path) -> None:
    """Write a small text file atomically."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Write a small JSON summary atomically."""
    write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_results(root: str | Path = "results") -> None:
    """Refuse to start on damaged artifacts of an earlier run: a Parquet file whose footer cannot be
    read (truncated, or not Parquet at all) or a model checkpoint without config or weights.

    Snakemake would take either as finished (the file exists) and the first rule to read it would
    fail later, possibly on a GPU node; the message names the file and what to do instead.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*.parquet")):
        if path.parent.name.endswith(".shards"):
            continue  # unfinished work of a killed job: its stage re-reads or recomputes it
        try:
            pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ArtifactError(f"{path}: not a readable Parquet file ({error}); delete it and re-run to "
                                "compute it again") from None
    for path in sorted(root.rglob("checkpoint")) + sorted(root.glob("models/*")):
        if not path.is_dir():
            continue
        missing = [] if (path / "config.json").is_file() else ["config.json"]
        if not any((path / name).is_file() for name in WEIGHTS):
            missing.append("weights (" + " or ".join(WEIGHTS[::2]) + ")")
        if missing:
            raise ArtifactError(f"{path}: a model checkpoint without {' and '.join(missing)}; delete the "
                                "directory and re-run to train (or convert) it again")


# IPR (ipr.py): the chat messages of a pair's prompt, chosen and rejected continuations.
_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

# IPR exploration along expert trajectories: one row per (expert episode, step t), t 1-based.
# The agent acted at temperature 0 after the expert's prefix e_{t-1}; `agent_steps` is its
# continuation ê_{t:m} (steps as in TRAJECTORIES); step rewards are the scorer's Monte Carlo
# estimates. t = 1 is the agent's episode from scratch (outcome-level comparison).
IPR_STEPS = pa.schema(
    [
        ("task_id", pa.string()),
        ("episode_id", pa.string()),
        ("t", pa.int32()),
        ("expert_thought", pa.string()),
        ("expert_action", pa.string()),
        ("agent_thought", pa.string()),
        ("agent_action", pa.string()),
        ("expert_step_reward", pa.float64()),
        ("agent_step_reward", pa.float64()),
        ("expert_final_reward", pa.float64()),
        ("agent_final_reward", pa.float64()),
        ("agent_steps", pa.list_(pa.struct([("observation", pa.string()), ("thought", pa.string()),
                                             ("action", pa.string()), ("reward", pa.float64()),
                                             ("done", pa.bool_()), ("error_class", pa.string())]))),
    ]
)

# IPR preference pairs: kind "outcome" (D_t, whole episodes after the task) or "step" (D_s,
# suffixes after the expert prefix e_{t-1}); chosen/rejected continue the prompt's messages.
IPR_PAIRS = pa.schema(
    [
        ("kind", pa.string()),
        ("task_id", pa.string()),
        ("episode_id", pa.string()),
        ("t", pa.int32()),
        ("prompt", _MESSAGES),
        ("chosen", _MESSAGES),
        ("rejected", _MESSAGES),
        ("chosen_final_reward", pa.float64()),
        ("rejected_final_reward", pa.float64()),
        ("chosen_step_reward", pa.float64()),
        ("rejected_step_reward", pa.float64()),
    ]
)
