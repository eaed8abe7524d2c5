"""The write path: one strict row check shared with the validate step, fast paths that keep key_count exact,
parallel writers, and the proof that lets a validated partition skip the second check (real servers)."""

from __future__ import annotations

import json

import pytest

from qp_core.kv import KVPublisher
from qp_core.kv.rows import check_row, partition_prevalidated, partition_stamp
from qp_core.normalize import compact, normalize_query, query_key
from tests.test_kv_store import QUERIES, all_values, make_result, make_rows, settings

pytestmark = pytest.mark.redis


@pytest.fixture()
def clean_redis(kv_redis):
    return kv_redis


def _row(q: str, **result_overrides) -> dict:
    qn = normalize_query(q)
    result = dict(make_result(q, "A"), **result_overrides)
    return {"query_key": query_key(qn), "query_norm": qn, "result_json": json.dumps(result, ensure_ascii=False),
            "src": "model", "model_version": "m", "rules_version": "r", "prompt_version": "1"}


def test_strict_types_control_chars_sizes_and_duplicate_keys_are_refused(clean_redis):
    q = "小棕瓶 精华 修护"
    n = len(make_result(q, "A")["segments"])
    good = _row(q)
    cases = {
        "string weight": (_row(q, weights=["1"] * n), "result_json invalid"),
        "bool weight": (_row(q, weights=[True] * n), "result_json invalid"),
        "float weight": (_row(q, weights=[1.0] * n), "result_json invalid"),
        "weight out of range": (_row(q, weights=[4] * n), "result_json invalid"),
        "NUL in intent": (_row(q, intent_desc="找\x00精华"), "control characters"),
        "bidi override": (_row(q, intent_desc="找\u202e精华"), "control characters"),
        "zero width in entity": (_row(q, entities=[{"text": "小棕\u200b瓶", "type": "brand"}]),
                                 "control characters"),
        "lone surrogate": (_row(q, intent_desc="找\ud800"), "control characters"),
        "30 KB value": (dict(good, result_json=good["result_json"][:-1] + " " * 30_000 + "}"), "too large"),
        "too many entities": (_row(q, entities=[{"text": "小棕瓶", "type": "brand"}] * 65), "too large"),
        "duplicate keys": (dict(good, result_json=good["result_json"][:-1] + ',"weights":[3]}'),
                           "result_json duplicate keys"),
        "not an object": (dict(good, result_json="[1]"), "result_json invalid"),
    }
    for name, (row, reason) in cases.items():
        assert check_row(row) == reason, name
    pub = KVPublisher(clean_redis, settings=settings())
    report = pub.publish([row for row, _ in cases.values()] + [good], "nsA", "2026-11-01")
    assert report.written == 1 and report.rejected == len(cases)
    assert sum(report.reject_reasons.values()) == len(cases)
    assert list(all_values(pub.r, "nsA")) == [f"qp:nsA:{query_key(normalize_query(q))}"]


def test_prevalidated_rows_write_the_same_bytes_and_exact_key_count(clean_redis):
    rows = make_rows(QUERIES, "A")
    canonical = [dict(r, result_json=check_row(r).result_json) for r in rows]  # what the validate step stores
    pub = KVPublisher(clean_redis, settings=settings())
    first = pub.publish(canonical, "nsA", "2026-11-01")
    checked = all_values(pub.r, "nsA")
    again = pub.publish(canonical[:40] + make_rows(["新查询 一"], "A"), "nsA", "2026-11-01", prevalidated=True)
    assert (first.new_keys, again.new_keys, again.refreshed) == (len(QUERIES), 1, 40)
    assert {k: v for k, v in all_values(pub.r, "nsA").items() if k in checked} == checked, "identical bytes"
    assert pub.admin.meta("nsA")["key_count"] == str(len(QUERIES) + 1)


def test_prevalidated_encoding_is_byte_identical_to_the_spec_encoder():
    from qp_core.kv.layout import encode_value
    from qp_core.kv.publisher import encode_checked
    from qp_core.schema import dump_unified

    result = {"entities": [{"text": 'a"b', "type": "brand"}], "segments": ['a"b\\c', "中文"], "weights": [1, 0],
              "category": ["美妆/彩妆"], "intent_desc": 'say "hi" \\ 中文'}
    for q in ['a"b\\c 中文', "plain", "emoji 😀 q"]:
        assert encode_checked(dump_unified(result), q, "fallback", "2026-11-01") == \
            encode_value(result, q, "fallback", "2026-11-01")


def test_parallel_workers_write_what_one_process_writes(clean_redis):
    rows = make_rows(QUERIES, "A")
    one = KVPublisher(clean_redis, settings=settings(batch_size=7))
    one.publish(rows, "nsOne", "2026-11-01")
    many = KVPublisher(clean_redis, settings=settings(batch_size=7))
    report = many.publish(rows * 2 + [dict(rows[0], src="llm")], "nsMany", "2026-11-01", workers=2)
    assert report.workers == 2 and report.rejected == 1 and report.written == 2 * len(rows)
    strip = lambda d: {k.split(":", 2)[2]: v for k, v in d.items()}  # noqa: E731
    assert strip(all_values(many.r, "nsMany")) == strip(all_values(one.r, "nsOne"))
    assert many.admin.meta("nsMany")["key_count"] == str(len(QUERIES))
    assert len(report.published) == 2 * len(rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_fence_runs_before_every_batch_and_stops_the_publish(clean_redis, workers):
    """A fence that raises (a lease lost to another publisher) stops the writes where it raises."""
    calls = []

    class Lost(RuntimeError):
        pass

    def fence():
        calls.append(1)
        if len(calls) == 3:
            raise Lost("lease taken over")

    pub = KVPublisher(clean_redis, settings=settings(batch_size=10))
    with pytest.raises(Lost):
        pub.publish(make_rows([f"雅诗兰黛 粉底液 {i}号" for i in range(600)], "A"), "nsA", "2026-11-01",
                    fence=fence, workers=workers)
    # one process: fenced per batch of 10 -> 2 batches; workers: per chunk of 10 batches -> the 2 chunks handed
    # out (the second may still be queued, then it is cancelled)
    assert len(all_values(pub.r, "nsA")) in ({20} if workers == 1 else {100, 200})
    assert pub.admin.meta("nsA")["key_count"] == "0", "no metadata update after a lost fence"


def test_partition_stamp_proves_an_untouched_validated_partition(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = tmp_path / "dt=2026-11-01"
    part.mkdir()
    pq.write_table(pa.Table.from_pylist(make_rows(QUERIES[:3], "A")), part / "part-00000.parquet")
    quality = {"passed": True, "row_check": partition_stamp(part)}
    assert partition_prevalidated(part, quality)
    assert not partition_prevalidated(part, {"passed": True})  # an older validate step: check again
    assert not partition_prevalidated(part, dict(quality, row_check=dict(quality["row_check"], version=1)))
    pq.write_table(pa.Table.from_pylist(make_rows(QUERIES[:4], "A")), part / "part-00000.parquet")
    assert not partition_prevalidated(part, quality), "an edited file must be checked row by row again"


def test_validate_step_refuses_what_the_publisher_refuses():
    """An output the parser and the schema accept but the shared row check refuses (here: more segments than
    the size cap) is not passed by the validate step either: it falls back, so publish never refuses it."""
    from qp_core.kv.rows import MAX_LIST_ITEMS
    from qp_core.nearline.validate import validate_rows

    def gen(q: str) -> dict:
        segs = list(compact(q))
        text = json.dumps({"entities": [], "segments": segs, "weights": [1] * len(segs), "category": ["美妆/护肤"],
                           "intent_desc": "找精华"}, ensure_ascii=False)
        return {"query_key": query_key(q), "query_norm": q, "text": text, "model_version": "m"}

    class NoLegacy:  # the fallback is not under test here: it answers nothing
        def predict_batch(self, queries):
            return [None] * len(queries)

    long_q, short_q = "精" * (MAX_LIST_ITEMS + 1), "精华修护"
    rows = validate_rows([gen(long_q), gen(short_q)], legacy=NoLegacy())
    assert rows[0]["error"] == "check: too large" and rows[0]["src"] == "none"
    assert rows[1]["src"] == "model" and not isinstance(check_row(rows[1]), str)
