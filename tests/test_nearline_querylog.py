"""The query log's schema contract and the quarantine of undecodable rows, on real Parquet partitions
run through the real sample and context steps (Spark local mode)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from qp_core import paths
from qp_core.nearline.querylog import LogSchemaError, schema_problems
from tests.test_nearline_spark_jobs import DT, read, write_log

pytestmark = pytest.mark.spark

BASE = datetime.fromisoformat(DT).replace(tzinfo=timezone.utc)


def good_columns(n: int = 3) -> dict:
    import pyarrow as pa

    return {
        "user_id": [f"u{i}" for i in range(n)], "session_id": [f"s{i}" for i in range(n)],
        "event_time": pa.array([BASE + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "query": pa.array(["dior 口红", "粉底液", "露营帐篷"][:n], pa.string()), "platform": ["app"] * n,
    }


def write_raw(dt: str, columns: list[tuple[str, object]], name: str = "part-0.parquet") -> None:
    """A log file with exactly these (name, values) columns, duplicates allowed, as an upstream might write it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v) for _, v in columns]
    out = paths.partition("raw/query_log", dt)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, names=[n for n, _ in columns]), out / name)


def with_query(values) -> list[tuple[str, object]]:
    cols = good_columns()
    cols["query"] = values
    return list(cols.items())


def nothing_written(dt: str = DT) -> bool:
    return not any(paths.partition(d, dt).exists() for d in ("curated/quarantine", "curated/query_sample",
                                                              "curated/query_context"))


def _bad_query_columns():
    import pyarrow as pa

    return {
        "int": (pa.array([1, 2, 3], pa.int64()), "column 'query' has type int64, expected string"),
        "binary": (pa.array([b"iphone", b"a", b"b"], pa.binary()), "column 'query' has type binary, expected string"),
        "list": (pa.array([["a", "b"], ["c"], []], pa.list_(pa.string())),
                 "column 'query' has type list<"),
        "struct": (pa.array([{"text": "a"}, {"text": "b"}, {"text": "c"}], pa.struct([("text", pa.string())])),
                   "column 'query' has type struct<text: string>, expected string"),
    }


@pytest.mark.parametrize("kind", ["int", "binary", "list", "struct"])
def test_mistyped_query_column_stops_sample_and_writes_nothing(spark, spark_lake, kind):
    from jobs import sample

    values, message = _bad_query_columns()[kind]
    write_raw(DT, with_query(values))
    with pytest.raises(LogSchemaError) as err:
        sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    text = str(err.value)
    assert message in text and f"dt={DT}" in text and "part-0.parquet" in text
    assert nothing_written()


def test_missing_query_column_is_named(spark, spark_lake):
    from jobs import sample

    write_raw(DT, [(k, v) for k, v in good_columns().items() if k != "query"] + [("q", ["a", "b", "c"])])
    with pytest.raises(LogSchemaError, match=r"column 'query' is missing \(has user_id, session_id, event_time, "
                                             r"platform, q\)"):
        sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    assert nothing_written()


@pytest.mark.parametrize("second", ["query", "Query"])
def test_duplicated_query_column_is_named(spark, spark_lake, second):
    """Two ``query`` columns (or ``query`` and ``Query``, which Spark cannot tell apart): not one picked at random."""
    from jobs import sample

    write_raw(DT, list(good_columns().items()) + [(second, ["x", "y", "z"])])
    with pytest.raises(LogSchemaError, match=rf"column 'query' is duplicated \(2 columns: query, {second}\)"):
        sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    assert nothing_written()


def test_a_second_file_of_another_type_is_caught(spark, spark_lake):
    """Spark infers a partition's schema from one footer; every file is checked."""
    import pyarrow as pa

    from jobs import sample

    write_raw(DT, list(good_columns().items()), name="part-0.parquet")
    write_raw(DT, with_query(pa.array([7, 8, 9], pa.int32())), name="part-1.parquet")
    with pytest.raises(LogSchemaError, match=r"part-1\.parquet: column 'query' has type int32"):
        sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    assert nothing_written()


def test_context_checks_every_partition_of_its_window(spark, spark_lake):
    """A bad older partition inside the lookback window stops the context step, naming that partition."""
    import pyarrow as pa

    from jobs import context, sample

    write_log(DT, [("u1", "s1", 0, "粉底液"), ("u1", "s1", 1, "粉底液 色号")])
    sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    cols = good_columns()
    cols["event_time"] = pa.array(["2026-11-09 10:00"] * 3, pa.string())  # a timestamp shipped as text
    write_raw("2026-11-09", list(cols.items()))
    with pytest.raises(LogSchemaError, match=r"dt=2026-11-09.*column 'event_time' has type string, expected timestamp"):
        context.main(["--dt", DT], spark=spark)
    assert not paths.partition("curated/query_context", DT).exists()


def test_extra_columns_and_large_strings_are_fine():
    import pyarrow as pa

    schema = pa.schema([("user_id", pa.large_string()), ("query", pa.string()), ("extra", pa.int64())])
    assert schema_problems(schema, ("user_id", "query")) == []
    assert schema_problems(schema, ("session_id",)) == [
        "column 'session_id' is missing (has user_id, query, extra)"]


def test_undecodable_row_is_quarantined_and_counted(spark, spark_lake):
    """Invalid UTF-8 in one row: that row goes to quarantine (bytes kept), the day goes on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import context, sample

    raw = [b"dior \xe5\x8f\xa3\xe7\xba\xa2", b"\xff\xfe iphone", "粉底液".encode(), b"caf\xc3", None]
    queries = pa.array(raw, pa.binary()).view(pa.string())  # bytes Parquet will store as-is under a UTF8 type
    n = len(raw)
    cols = good_columns(n)
    cols.update(user_id=[f"u{i}" for i in range(n)], session_id=["s1"] * n,
                event_time=pa.array([BASE + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
                query=queries, platform=["app"] * n)
    write_raw(DT, list(cols.items()))

    report = sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    assert report.rows == n
    assert report.quarantined == {"undecodable": 2, "null": 1}
    assert {r["query_norm"] for r in read("curated/query_sample")} == {"dior 口红", "粉底液"}
    table = pq.read_table(paths.partition("curated/quarantine", DT))
    reasons = table.column("reason").to_pylist()
    stored = table.column("query").combine_chunks().view(pa.binary()).to_pylist()
    assert sorted(q for q, r in zip(stored, reasons) if r == "undecodable") == sorted([b"\xff\xfe iphone", b"caf\xc3"])

    # The context step reads the same rows over its window: the bad ones are left out, not fatal.
    ctx = context.main(["--dt", DT], spark=spark)
    assert ctx.queries == 2
    history = {r["query_norm"]: r["history"] for r in read("curated/query_context")}
    assert history["粉底液"] == ["dior 口红"]  # the undecodable row between them is skipped


def test_training_aux_pool_reads_the_log_through_the_contract(spark, spark_lake):
    """The training chain's aux stage pools queries from the same log: a drifted column stops it too."""
    from qp_core.lake import AUX, dataset
    from qp_core.training.aux import build_aux

    values, message = _bad_query_columns()["binary"]
    write_raw(DT, with_query(values))
    with pytest.raises(LogSchemaError, match=message):
        build_aux(spark, DT, size=10, lookback_days=2, tasks=["seg"], seed=0)
    assert not dataset(AUX).exists()
