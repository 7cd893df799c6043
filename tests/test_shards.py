"""Stages keep their progress in shards: an interrupted map resumes, a changed input never reuses."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from envisions_flow.workflow.shards import clear, files_signature, fingerprint, map_in_shards

SCHEMA = pa.schema([("item", pa.int64()), ("square", pa.int64()), ("shard", pa.int32())])


class Interrupted(Exception):
    pass


def squares(calls: list[int], stop_after: int | None = None):
    def work(shard, index):
        if stop_after is not None and len(calls) == stop_after:
            raise Interrupted
        calls.append(index)
        return [{"item": item, "square": item * item, "shard": index} for item in shard]
    return work


def test_an_interrupted_map_resumes_from_the_finished_shards(tmp_path):
    output, items = tmp_path / "out.parquet", list(range(10))
    with pytest.raises(Interrupted):
        map_in_shards(items, 3, output, SCHEMA, "k1", squares([], stop_after=2))
    assert len(list((tmp_path / "out.parquet.shards").glob("*.parquet"))) == 2
    calls: list[int] = []
    frame = map_in_shards(items, 3, output, SCHEMA, "k1", squares(calls))
    assert calls == [2, 3]  # shards 0 and 1 were read back, not computed again
    assert frame["item"].tolist() == items and frame["square"].tolist() == [i * i for i in items]
    assert frame["shard"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    clear(output)
    assert not (tmp_path / "out.parquet.shards").exists()


def test_shards_of_another_fingerprint_or_unreadable_ones_are_computed_again(tmp_path):
    output = tmp_path / "out.parquet"
    map_in_shards([1, 2, 3, 4], 2, output, SCHEMA, "old", squares([]))
    calls: list[int] = []
    map_in_shards([1, 2, 3, 4], 2, output, SCHEMA, "new", squares(calls))
    assert calls == [0, 1]
    assert sorted(p.name for p in (tmp_path / "out.parquet.shards").iterdir()) == ["new-00000.parquet",
                                                                                    "new-00001.parquet"]
    (tmp_path / "out.parquet.shards" / "new-00001.parquet").write_bytes(b"PAR1 torn")
    calls = []
    frame = map_in_shards([1, 2, 3, 4], 2, output, SCHEMA, "new", squares(calls))
    assert calls == [1] and frame["square"].tolist() == [1, 4, 9, 16]


def test_an_empty_input_gives_an_empty_table(tmp_path):
    frame = map_in_shards([], 2, tmp_path / "out.parquet", SCHEMA, "k", squares([]))
    assert isinstance(frame, pd.DataFrame) and len(frame) == 0 and list(frame.columns) == SCHEMA.names


def test_fingerprints_follow_inputs_and_model_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1")
    before = fingerprint("explore", ["q1"], files_signature(model))
    assert before == fingerprint("explore", ["q1"], files_signature(model))
    assert before != fingerprint("explore", ["q2"], files_signature(model))
    (model / "weights.bin").write_bytes(b"22")  # retrained in place
    assert before != fingerprint("explore", ["q1"], files_signature(model))
    assert files_signature(tmp_path / "missing") == []
