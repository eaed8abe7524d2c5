"""The incremental promise: a day generates exactly the queries that are missing, stale, or whose model/rules
changed — no more, no fewer.

Two consecutive days through the real sample step (Spark local), with the KV manifest written between them
by the publish step's own writer (``qp_core.kv.manifest.update_manifest``) from what day 1 selected — minus
one query the publisher refused — and namespaces named by ``namespace_for`` as the pipeline names them.
``refresh_days`` is 14 (conf/sampling.yaml).
"""

from __future__ import annotations

import pytest

from qp_core.kv.layout import namespace_for
from qp_core.kv.manifest import read_manifest, update_manifest
from qp_core.normalize import query_key
from tests.test_nearline_spark_jobs import read, write_log

pytestmark = pytest.mark.spark

D1, D2 = "2026-11-10", "2026-11-11"
NS = namespace_for("m1", "r1", "p3")
NS_NEW_MODEL = namespace_for("m2", "r1", "p3")
NS_NEW_RULES = namespace_for("m1", "r2", "p3")


def log_rows(queries: list[str]) -> list[tuple]:
    return [(f"u{i % 3}", f"s{i}", i, q) for i, q in enumerate(queries)]


def selected(dt: str) -> dict[str, str]:
    return {r["query_norm"]: r["reason"] for r in read("curated/query_sample", dt)}


def publish(ns: str, queries: list[str], dt: str) -> None:
    """What the publish step records for the keys it wrote on ``dt``."""
    from qp_core.normalize import normalize_query

    update_manifest(ns, [(query_key(q), normalize_query(q)) for q in queries], dt)


def test_two_days_select_exactly_missing_stale_and_version_changes(spark, spark_lake):
    from jobs import sample

    # What the namespace held before day 1 (published on earlier dates).
    publish(NS, ["stale on d1"], "2026-10-20")      # 21 days before D1: stale on D1
    publish(NS, ["stale on d2"], "2026-10-28")      # 13 days before D1 (fresh), 14 before D2 (stale)
    publish(NS, ["fresh", "unseen"], "2026-11-01")  # fresh both days; "unseen" never logged
    # Day 1: every kind of query, spelled several ways, and malformed rows that must never be selected.
    write_log(D1, log_rows(["fresh", "FRESH", "stale on d1", "stale on d2", "new a", " New  A ", "new b",
                            "refused", None, "", "😀"]))
    r1 = sample.main(["--dt", D1, "--namespace", NS], spark=spark)
    assert r1.mode == "incremental"
    assert selected(D1) == {"stale on d1": "stale", "new a": "missing", "new b": "missing", "refused": "missing"}

    # Day 1 is generated and published, except "refused" (its output failed validation: not in the KV).
    publish(NS, ["stale on d1", "new a", "new b"], D1)
    assert len(read_manifest(NS)) == 6
    # Day 2: yesterday's queries again (other spellings), "new b" not logged today, one new query.
    write_log(D2, log_rows(["Fresh", "stale on d1", "STALE ON D2", "new a", "refused", "new c", "new c"]))
    r2 = sample.main(["--dt", D2, "--namespace", NS], spark=spark)
    assert r2.mode == "incremental"
    assert selected(D2) == {"stale on d2": "stale", "refused": "missing", "new c": "missing"}
    assert r2.selected == {"stale": 1, "missing": 2} and r2.distinct_queries == 6

    # Day 2 with a new model, or new rules: a new namespace while NS is live -> the whole day, nothing else.
    everything = {q: "version_change" for q in ("fresh", "stale on d1", "stale on d2", "new a", "refused", "new c")}
    for ns in (NS_NEW_MODEL, NS_NEW_RULES):
        r = sample.main(["--dt", D2, "--namespace", ns, "--previous-namespace", NS], spark=spark)
        assert r.mode == "version_change"
        assert selected(D2) == everything

    # Once the new model's namespace holds day 2, day 3 is incremental against it again.
    publish(NS_NEW_MODEL, list(everything), D2)
    d3 = "2026-11-12"
    write_log(d3, log_rows(["fresh", "new c", "new d"]))
    r3 = sample.main(["--dt", d3, "--namespace", NS_NEW_MODEL], spark=spark)
    assert r3.mode == "incremental" and selected(d3) == {"new d": "missing"}


def test_rerunning_day_2_after_its_publish_selects_the_same_set(spark, spark_lake):
    """The manifest is read as of the date: a rerun of D2 after D2 was published chooses what D2 chose."""
    from jobs import sample

    publish(NS, ["a", "b"], "2026-10-01")  # stale on D2
    publish(NS, ["c"], D1)
    write_log(D2, log_rows(["a", "c", "d"]))
    sample.main(["--dt", D2, "--namespace", NS], spark=spark)
    first = selected(D2)
    assert first == {"a": "stale", "d": "missing"}
    publish(NS, list(first), D2)
    sample.main(["--dt", D2, "--namespace", NS], spark=spark)
    # The same queries; "a" is now "missing": the manifest keeps one date per key, and D2 replaced 2026-10-01.
    assert selected(D2) == {"a": "missing", "d": "missing"}
