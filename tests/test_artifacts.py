import os
import stat

import pandas as pd
import pytest

from envisions_flow.workflow import artifacts as art


def test_round_trip_keeps_the_schema(tmp_path):
    rows = [{"id": "a", "question": "q", "answer": "1", "source": "s"}]
    art.write_table(rows, tmp_path / "t.parquet", art.TASKS)
    frame = art.read_table(tmp_path / "t.parquet", art.TASKS)
    assert frame.to_dict("records") == rows
    assert not list(tmp_path.glob(".*.tmp"))


def test_written_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        art.write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


def test_corrupt_and_mistyped_artifacts_name_the_file(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 truncated")
    with pytest.raises(art.ArtifactError, match="broken.parquet: not a readable Parquet file"):
        art.read_table(broken, art.TASKS)
    partial = tmp_path / "partial.parquet"
    pd.DataFrame({"id": ["a"]}).to_parquet(partial)
    with pytest.raises(art.ArtifactError, match=r"partial.parquet: missing columns \['question', 'answer', 'source'\]"):
        art.read_table(partial, art.TASKS)
    with pytest.raises(art.ArtifactError, match="rows lack columns"):
        art.write_table([{"id": "a"}], tmp_path / "out.parquet", art.TASKS)
    with pytest.raises(art.ArtifactError, match="file not found"):
        art.read_table(tmp_path / "missing.parquet", art.TASKS)
