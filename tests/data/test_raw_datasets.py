"""Data expectations on the raw lake datasets (Made-With-ML style "data tests").

They run on the small synthetic world by default; point them at any lake with
``QP_DATA_TESTS_LAKE=/path/to/lake pytest tests/data`` (e.g. after ``qp world generate`` with defaults)
to check a full-size world or a production extract against the same expectations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from qp_core.normalize import compact
from qp_core.schema import dump_unified, entity_types, taxonomy_labels, validation_errors

LOG_SCHEMA = {
    "user_id": pa.string(),
    "session_id": pa.string(),
    "event_time": pa.timestamp("us", tz="UTC"),
    "query": pa.string(),
    "platform": pa.string(),
}
LABELLED_SCHEMA = {
    "query": pa.string(),
    "history": pa.list_(pa.string()),
    "notes": pa.list_(pa.string()),
    "label": pa.string(),
}
NOTES_SCHEMA = {
    "note_id": pa.string(),
    "title": pa.string(),
    "body": pa.string(),
    "tags": pa.list_(pa.string()),
    "category": pa.string(),
    "created_dt": pa.string(),
}
MAX_MALFORMED_RATE = 0.05


@pytest.fixture(scope="module")
def lake(request) -> Path:
    env = os.environ.get("QP_DATA_TESTS_LAKE")
    return Path(env) if env else request.getfixturevalue("small_world")


def _file_schema(path: Path) -> dict:
    schema = pq.read_schema(path)
    return {f.name: f.type for f in schema}


def _partitions(lake: Path, name: str) -> list[Path]:
    parts = sorted((lake / name).glob("dt=*"))
    assert parts, f"{name}: no dt= partitions"
    return parts


def test_partitions_are_iso_date_strings(lake):
    import datetime as dt

    for name in ("raw/query_log", "raw/annotations"):
        for part in _partitions(lake, name):
            dt.date.fromisoformat(part.name[3:])
    dts = [p.name for p in _partitions(lake, "raw/query_log")]
    assert dts == [p.name for p in _partitions(lake, "raw/annotations")]


@pytest.mark.parametrize(
    "name, expected",
    [("raw/query_log", LOG_SCHEMA), ("raw/annotations", LABELLED_SCHEMA), ("raw/golden", LABELLED_SCHEMA),
     ("raw/notes", NOTES_SCHEMA)],
)
def test_columns_and_types(lake, name, expected):
    files = sorted((lake / name).rglob("*.parquet"))
    assert files
    for f in files:
        assert _file_schema(f) == expected, f


def test_query_log_nulls_and_malformed_rate(lake):
    table = ds.dataset(lake / "raw/query_log", format="parquet", partitioning="hive").to_table()
    for col in ("user_id", "session_id", "event_time", "platform"):
        assert table[col].null_count == 0, col
    queries = table["query"].to_pylist()
    bad = sum(1 for q in queries if q is None or not compact(q) or len(q) > 1000 or not any(c.isalnum() for c in q))
    assert 0 < bad / len(queries) <= MAX_MALFORMED_RATE
    assert len(set(table["platform"].to_pylist())) >= 3


def test_event_time_inside_its_partition(lake):
    for part in _partitions(lake, "raw/query_log"):
        t = pq.read_table(part, columns=["event_time"])["event_time"].to_pylist()
        assert {x.date().isoformat() for x in t} == {part.name[3:]}


def test_labelled_rows_valid_and_label_sets_from_conf(lake):
    types, labels = set(entity_types()), set(taxonomy_labels())
    for name in ("raw/annotations", "raw/golden"):
        rows = pq.read_table(lake / name).to_pylist()
        assert rows, name
        for r in rows:
            assert r["query"] and r["label"] and r["history"] is not None and r["notes"] is not None
            lab = json.loads(r["label"])
            assert validation_errors(lab, r["query"]) == [], (name, r)
            assert dump_unified(lab) == r["label"]
            assert {e["type"] for e in lab["entities"]} <= types
            assert set(lab["category"]) <= labels


def test_golden_never_in_training_data(lake):
    golden = {compact(q) for q in pq.read_table(lake / "raw/golden", columns=["query"])["query"].to_pylist()}
    annotated = {compact(q) for q in pq.read_table(lake / "raw/annotations", columns=["query"])["query"].to_pylist()}
    logged = {compact(q) for q in pq.read_table(lake / "raw/query_log", columns=["query"])["query"].to_pylist() if q}
    assert golden and not golden & annotated and not golden & logged


def test_notes_pool(lake):
    notes = pq.read_table(lake / "raw/notes").to_pylist()
    assert len({n["note_id"] for n in notes}) == len(notes)
    assert {n["category"] for n in notes} <= set(taxonomy_labels())
    assert all(n["title"] and n["body"] and n["tags"] for n in notes)
