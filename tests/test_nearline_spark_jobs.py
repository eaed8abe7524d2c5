"""The nearline Spark jobs (sample -> context -> prompts) on hand-made lake data, through their main()."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from qp_core import paths
from qp_core.nearline.text import malformed_reason, tokenize
from qp_core.normalize import normalize_query, query_key

pytestmark = pytest.mark.spark

DT = "2026-11-10"


# ----------------------------------------------------------------------------------------------- helpers
def write_log(dt: str, rows: list[tuple]) -> None:
    """rows: (user_id, session_id, minute offset, query) -> raw/query_log/dt=<dt>/part-0.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = datetime.fromisoformat(dt).replace(tzinfo=timezone.utc)
    table = pa.table({
        "user_id": [r[0] for r in rows],
        "session_id": [r[1] for r in rows],
        "event_time": pa.array([base + timedelta(minutes=r[2]) for r in rows], pa.timestamp("us", tz="UTC")),
        "query": pa.array([r[3] for r in rows], pa.string()),
        "platform": ["app"] * len(rows),
    })
    out = paths.partition("raw/query_log", dt)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-0.parquet")


def write_manifest(ns: str, rows: list[tuple[str, str]]) -> None:
    """rows: (query, last_dt) -> curated/kv_manifest/ns=<ns>/ as the KV publish step would write it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = paths.dataset("curated/kv_manifest") / f"ns={ns}"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "query_key": [query_key(q) for q, _ in rows],
        "query_norm": [normalize_query(q) for q, _ in rows],
        "last_dt": [d for _, d in rows],
    }), out / "part-0.parquet")


def write_notes(rows: list[tuple[str, str, str, list[str]]], created_dt: str = "2026-01-01") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = paths.dataset("raw/notes")
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "note_id": [r[0] for r in rows], "title": [r[1] for r in rows], "body": [r[2] for r in rows],
        "tags": pa.array([r[3] for r in rows], pa.list_(pa.string())),
        "category": ["x"] * len(rows), "created_dt": [created_dt] * len(rows),
    }), out / "part-0.parquet")


def read(dataset: str, dt: str = DT) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(paths.partition(dataset, dt)).to_pylist()


def by_query(rows: list[dict]) -> dict[str, dict]:
    return {r["query_norm"]: r for r in rows}


# Three users; "dior 口红" arrives in three spellings that normalise alike; 7 malformed rows.
DAY_ROWS = [
    ("u1", "s1", 0, "Dior 口红"), ("u1", "s1", 1, "ＤＩＯＲ  口红"), ("u2", "s2", 0, " dior 口红 "),
    ("u2", "s2", 1, "粉底液"), ("u3", "s3", 0, "粉底液"),
    ("u3", "s3", 2, "露营\x00帐篷"),  # control character -> a space: fine, not malformed
    ("u1", "s4", 0, None), ("u1", "s4", 1, ""), ("u2", "s5", 0, " \t "), ("u2", "s5", 1, "😀😀😀"),
    ("u3", "s6", 0, "！？…"), ("u3", "s6", 1, "长" * 500), ("u3", "s6", 2, "\x01\x02"),
]


# ------------------------------------------------------------------------------------------ pure helpers
def test_malformed_reason_rules():
    assert malformed_reason(None, "", 64) == "null"
    assert malformed_reason("  ", "", 64) == "empty"
    assert malformed_reason("x" * 65, "x" * 65, 64) == "too_long"
    assert malformed_reason("😀!", "😀!", 64) == "symbols_only"
    assert malformed_reason("露营 帐篷", "露营 帐篷", 64) is None
    assert malformed_reason("1c1", "1c1", 64) is None


def test_tokenize_cjk_bigrams_and_latin_words():
    assert tokenize("雅诗兰黛 1C1") == ["雅诗", "诗兰", "兰黛", "1c1"]
    assert tokenize("雅诗兰黛", cjk_unigrams=True) == ["雅", "诗", "兰", "黛", "雅诗", "诗兰", "兰黛"]
    assert tokenize("Retro-X 帐篷!") == ["retro", "x", "帐篷"]
    assert tokenize("买 iPhone15 的壳") == ["买", "iphone15", "的壳"]
    assert tokenize(None) == []


def test_submit_command_carries_master_conf_and_interpreter():
    import sys

    from qp_core.ops.spark import SparkSettings, submit_command, submit_env

    cmd = submit_command("context", ["--dt", DT], SparkSettings(master="local-cluster[2,1,1024]"))
    assert cmd[0].endswith("spark-submit") and cmd[1:3] == ["--master", "local-cluster[2,1,1024]"]
    assert "spark.sql.sources.partitionColumnTypeInference.enabled=false" in cmd  # forced, whatever the conf
    assert f"spark.pyspark.python={sys.executable}" in cmd
    assert cmd[-3:] == [str(paths.REPO_ROOT / "jobs" / "context.py"), "--dt", DT]
    assert submit_env({})["PYSPARK_PYTHON"] == sys.executable
    with pytest.raises(FileNotFoundError):
        submit_command("no_such_job", [])


def test_run_sql_binds_named_parameters_and_rejects_typos(spark):
    from qp_core.ops.spark import run_sql

    queries = spark.createDataFrame([("k1", "a", 3, 1), ("k2", "b", 1, 1)],
                                    "query_key string, query_norm string, freq long, uv long")
    manifest = spark.createDataFrame([("k2", "b", "2026-11-01")], "query_key string, query_norm string, last_dt string")
    rows = run_sql(spark, "sample_select", queries=queries, manifest=manifest, version_change=False, dt=DT,
                   refresh_days=5).orderBy("query_key").collect()
    assert [(r["query_key"], r["reason"]) for r in rows] == [("k1", "missing"), ("k2", "stale")]
    with pytest.raises(ValueError, match="unknown parameters"):
        run_sql(spark, "sample_select", queries=queries, manifest=manifest, version_change=False, dt=DT,
                refresh_days=5, refresh_dayz=3)


# ------------------------------------------------------------------------------------------------ sample
def test_sample_quarantine_dedupe_freq_uv(spark, spark_lake):
    from jobs import sample

    write_log(DT, DAY_ROWS)
    report = sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)

    assert report.rows == len(DAY_ROWS)
    assert report.quarantined == {"null": 1, "empty": 3, "symbols_only": 2, "too_long": 1}
    quarantine = read("curated/quarantine")
    assert len(quarantine) == 7
    assert {"user_id", "session_id", "event_time", "query", "platform", "reason"} <= set(quarantine[0])
    assert sorted(r["query"] for r in quarantine if r["reason"] == "too_long") == ["长" * 500]

    rows = by_query(read("curated/query_sample"))
    assert set(rows) == {"dior 口红", "粉底液", "露营 帐篷"}
    assert (rows["dior 口红"]["freq"], rows["dior 口红"]["uv"]) == (3, 2)
    assert (rows["粉底液"]["freq"], rows["粉底液"]["uv"]) == (2, 2)
    assert (rows["露营 帐篷"]["freq"], rows["露营 帐篷"]["uv"]) == (1, 1)
    assert rows["dior 口红"]["query_key"] == query_key("DIOR 口红")  # what the KV reader will hash
    assert {r["reason"] for r in rows.values()} == {"missing"}  # cold start: nothing published yet
    assert report.mode == "cold_start" and report.distinct_queries == 3


def test_sample_budget_keeps_highest_frequency(spark, spark_lake):
    from jobs import sample

    rows = [(f"u{i}", f"s{i}", i, "a1") for i in range(5)]
    rows += [(f"u{i}", f"t{i}", i, "b2") for i in range(3)]
    rows += [("u0", "x", 0, "c3"), ("u1", "x", 1, "c3"), ("u1", "y", 2, "d4"), ("u1", "y", 3, "d4")]
    rows += [("u9", "z", 0, "e5")]
    write_log(DT, rows)
    report = sample.main(["--dt", DT, "--namespace", "ns1", "--budget", "3"], spark=spark)

    out = sorted(read("curated/query_sample"), key=lambda r: r["rank"])
    # a1 (5), b2 (3), then c3 and d4 tie on freq 2: c3 wins on UV (2 users vs 1).
    assert [(r["query_norm"], r["rank"]) for r in out] == [("a1", 1), ("b2", 2), ("c3", 3)]
    assert report.selected_total == 3 and report.distinct_queries == 5


def test_sample_reasons_against_manifests(spark, spark_lake):
    from jobs import sample

    write_log(DT, [("u1", "s1", 0, "fresh"), ("u1", "s1", 1, "stale"), ("u1", "s1", 2, "edge"),
                   ("u1", "s1", 3, "new")])
    # refresh_days = 14 (conf/sampling.yaml): 13 days old is fresh, exactly 14 is stale.
    write_manifest("ns1", [("fresh", "2026-11-09"), ("stale", "2026-10-01"), ("edge", "2026-10-27"),
                           ("stale", "2026-09-01")])

    sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    got = {r["query_norm"]: r["reason"] for r in read("curated/query_sample")}
    assert got == {"stale": "stale", "edge": "stale", "new": "missing"}

    # A new namespace (new model or rules) while ns1 is live: everything is regenerated.
    report = sample.main(["--dt", DT, "--namespace", "ns2", "--previous-namespace", "ns1"], spark=spark)
    got = {r["query_norm"]: r["reason"] for r in read("curated/query_sample")}
    assert got == dict.fromkeys(["fresh", "stale", "edge", "new"], "version_change")
    assert report.mode == "version_change"

    # A namespace nobody named, while ns1 served before DT: still a version change (what a rerun sees once
    # the pointer names the new namespace and no --previous-namespace is passed).
    report = sample.main(["--dt", DT, "--namespace", "ns3"], spark=spark)
    assert report.mode == "version_change"
    assert {r["reason"] for r in read("curated/query_sample")} == {"version_change"}


def test_sample_as_of_date_cold_start_and_rerun_after_publish(spark, spark_lake):
    """A rerun of a date after its own publish (manifest stamped with that date) chooses the same set."""
    from jobs import sample

    write_log(DT, [("u1", "s1", 0, "a"), ("u2", "s1", 1, "a"), ("u1", "s1", 2, "b"), ("u1", "s1", 3, "c")])
    first = sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    assert first.mode == "cold_start" and first.selected == {"missing": 3}
    before = sorted(map(str, read("curated/query_sample")))

    # What the publish step then writes: every chosen query stamped DT; a later date refreshed "c".
    write_manifest("ns1", [("a", DT), ("b", DT), ("c", "2026-11-12")])
    again = sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    assert again.mode == "cold_start"
    assert sorted(map(str, read("curated/query_sample"))) == before


def test_sample_rerun_is_idempotent(spark, spark_lake):
    from jobs import sample

    write_log(DT, DAY_ROWS)
    outputs = []
    for _ in range(2):
        sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
        files = sorted(p.name for p in paths.partition("curated/query_sample", DT).glob("*.parquet"))
        outputs.append((sorted(map(str, read("curated/query_sample"))),
                        sorted(map(str, read("curated/quarantine"))), len(files)))
    assert outputs[0] == outputs[1]


# ----------------------------------------------------------------------------------------------- context
def test_context_history_order_and_window(spark, spark_lake):
    from jobs import context, sample

    prev_day = "2026-11-09"
    # Rows deliberately not in time order: precedence must come from event_time.
    write_log(DT, [
        ("u1", "s1", 5, "粉底液 色号"), ("u1", "s1", 1, "粉底液"),        # 粉底液 -> 粉底液 色号
        ("u2", "s2", 9, "粉底液 色号"), ("u2", "s2", 3, "雅诗兰黛"),      # 雅诗兰黛 -> 粉底液 色号
        ("u3", "s3", 2, "粉底液"), ("u3", "s3", 7, "粉底液 色号"),        # 粉底液 -> 粉底液 色号
        ("u4", "s4", 1, "粉底液 色号"), ("u4", "s4", 2, "粉底液 色号"),   # a repeat is no rewrite
        ("u5", "s5", 1, "口红"),
    ])
    write_log(prev_day, [("u6", "s6", 0, "底妆"), ("u6", "s6", 1, "粉底液 色号"),
                         ("u7", "s7", 0, "底妆"), ("u7", "s7", 1, "粉底液 色号"),
                         ("u8", "s8", 0, "底妆"), ("u8", "s8", 1, "粉底液 色号")])
    write_log("2026-10-01", [("u9", "s9", 0, "太老了"), ("u9", "s9", 1, "粉底液 色号")])  # outside the window
    sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    report = context.main(["--dt", DT], spark=spark)

    ctx = by_query(read("curated/query_context"))
    assert set(ctx) == {"粉底液 色号", "粉底液", "雅诗兰黛", "口红"}  # every sampled query gets a row
    # Most frequent predecessor last (oldest -> newest, as the prompt expects): 底妆 3, 粉底液 2, 雅诗兰黛 1.
    assert ctx["粉底液 色号"]["history"] == ["雅诗兰黛", "粉底液", "底妆"]
    assert ctx["口红"]["history"] == []
    assert report.log_days == 2 and report.queries == 4 and report.with_history == 1


def test_context_bm25_picks_the_relevant_note(spark, spark_lake):
    from jobs import context, sample
    from qp_core.prompt import render_note

    write_log(DT, [("u1", "s1", 0, "雅诗兰黛 粉底液 色号"), ("u2", "s2", 0, "露营帐篷推荐"), ("u3", "s3", 0, "zzz")])
    notes = [
        ("n1", "雅诗兰黛DW粉底液试色", "黄一白适合1c1色号，持妆一整天", ["粉底液", "雅诗兰黛"]),
        ("n2", "周末去露营", "这顶帐篷三分钟搭好，露营新手推荐", ["露营"]),
        ("n3", "猫粮测评", "主子爱吃的几款猫粮", ["宠物"]),
        ("n4", "口红色号合集", "秋冬口红推荐", ["口红"]),
    ]
    write_notes(notes)
    sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    report = context.main(["--dt", DT], spark=spark)

    ctx = by_query(read("curated/query_context"))
    assert ctx["雅诗兰黛 粉底液 色号"]["notes"][0] == render_note(*notes[0][1:])
    assert ctx["露营帐篷推荐"]["notes"][0] == render_note(*notes[1][1:])
    assert len(ctx["雅诗兰黛 粉底液 色号"]["notes"]) <= 3
    assert ctx["zzz"]["notes"] == []  # no shared term -> no note rather than a random one
    assert report.with_notes == 2 and report.notes_pool == 4


def test_context_bm25_numpy_scorer_matches_the_sql_join(spark, spark_lake):
    """The in-memory scorer (pool broadcast, ``nearline.bm25``) and the Spark SQL join (a pool too big to
    broadcast) choose the same notes in the same order for the world's queries
    against the world's 3,000-note pool."""
    from qp_core.bench.spark_scale import world_vocabulary
    from qp_core.bench.spark_scale import write_notes as write_world_notes
    from qp_core.nearline.context import candidate_notes, read_notes
    from qp_core.nearline.settings import load_sampling_settings

    write_world_notes(spark_lake)
    queries, words = world_vocabulary(300, seed=3)
    queries += [f"{q} {w}" for q, w in zip(queries, words[::7])] + ["zzz", ""]
    targets = spark.createDataFrame([(query_key(q), normalize_query(q)) for q in dict.fromkeys(queries)],
                                    "query_key string, query_norm string").dropDuplicates(["query_key"])
    notes = read_notes(spark, DT)
    got = {}
    for name, limit in (("numpy", 10**9), ("sql", 0)):
        settings = load_sampling_settings(bm25_broadcast_max_postings=limit)
        cached: list = []
        got[name] = {r["query_key"]: r["notes"] or [] for r in candidate_notes(spark, notes, targets, settings, cached).collect()}
        for frame in cached:
            frame.unpersist()
    assert sum(map(bool, got["sql"].values())) > 300 and got["numpy"] == got["sql"]


# ----------------------------------------------------------------------------------------------- prompts
def test_prompts_sharded_sorted_with_manifest_and_idempotent(spark, spark_lake):
    import pyarrow.parquet as pq

    from jobs import context, prompts, sample
    from qp_core.prompt import prefix_hash
    from qp_core.rules import rules_version

    queries = [f"查询{i:02d}" for i in range(11)]
    write_log(DT, [(f"u{i}", f"s{i}", i, q) for i, q in enumerate(queries)])
    write_notes([("n1", "查询技巧", "如何查询", ["查询"])])
    sample.main(["--dt", DT, "--namespace", "ns1"], spark=spark)
    context.main(["--dt", DT], spark=spark)

    out = paths.partition("curated/prompts", DT)
    prompts.main(["--dt", DT, "--rules-mode", "compact", "--shards", "4"], spark=spark)
    first = pq.read_table(out).to_pylist()
    prompts.main(["--dt", DT, "--rules-mode", "compact", "--shards", "4"], spark=spark)
    assert sorted(map(str, pq.read_table(out).to_pylist())) == sorted(map(str, first))

    manifest = json.loads((out / "_manifest.json").read_text())
    assert [s["shard"] for s in manifest["shards"]] == ["00000", "00001", "00002", "00003"]
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 3, 2] and manifest["rows"] == 11
    assert manifest["prefix_hashes"] == [prefix_hash("compact")]
    assert manifest["rules_version"] == rules_version()

    positions = []
    for shard in manifest["shards"]:
        rows = pq.read_table(out / shard["path"]).to_pylist()
        assert len(rows) == shard["rows"]
        positions += [r["pos"] for r in rows]  # stored in order within a shard
        for r in rows:
            messages = json.loads(r["messages_json"])
            assert [m["role"] for m in messages] == ["system", "user"]
            assert r["query_norm"] in messages[1]["content"] and r["reason"] == "missing"
    assert positions == list(range(11))
    all_rows = sorted(first, key=lambda r: r["pos"])
    assert [r["messages_json"] for r in all_rows] == sorted(r["messages_json"] for r in all_rows)

    # Fewer shards on a rerun: the old shards disappear (the partition is replaced whole).
    report = prompts.main(["--dt", DT, "--rules-mode", "full"], spark=spark)  # shard_size 256 -> 1 shard
    assert sorted(p.name for p in out.glob("shard=*")) == ["shard=00000"]
    assert len(report.shards) == 1 and report.prefix_hashes == [prefix_hash("full")]


# ------------------------------------------------------------------------------------------ spark-submit
@pytest.mark.slow
def test_sample_runs_under_spark_submit(spark_lake, monkeypatch):
    """The command the DAG and `qp backfill` run: a real spark-submit of jobs/sample.py."""
    from qp_core.ops.spark import load_spark_settings, submit_command, submit_env

    write_log(DT, DAY_ROWS)
    settings = load_spark_settings(master="local[1]")
    cmd = submit_command("sample", ["--dt", DT, "--namespace", "ns1"], settings)
    assert cmd[1:3] == ["--master", "local[1]"] and cmd[-5].endswith("jobs/sample.py")
    proc = subprocess.run(cmd, env=submit_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "selected 3" in proc.stdout + proc.stderr  # the job logs its row counts
    assert {r["query_norm"] for r in read("curated/query_sample")} == {"dior 口红", "粉底液", "露营 帐篷"}


# ----------------------------------------------------------------------------------- the synthetic world
def test_chain_on_small_world(spark, small_world, tmp_path, monkeypatch):
    """sample -> context -> prompts on the WORLD helper's small world (its raw/ linked read-only)."""
    import pyarrow.parquet as pq

    from jobs import context, prompts, sample

    root = tmp_path / "lake"
    root.mkdir()
    (root / "raw").symlink_to(small_world / "raw", target_is_directory=True)
    monkeypatch.setenv("QP_LAKE_ROOT", str(root))
    dt = "2026-11-02"

    s = sample.main(["--dt", dt, "--namespace", "ns1"], spark=spark)
    log_rows = pq.read_table(paths.partition("raw/query_log", dt)).num_rows
    assert s.rows == log_rows
    assert 0 < sum(s.quarantined.values()) < 0.05 * log_rows  # the world's malformed rows, set aside
    assert set(s.quarantined) <= {"null", "empty", "too_long", "symbols_only"}
    assert s.selected == {"missing": s.distinct_queries}  # cold start, budget not reached

    c = context.main(["--dt", dt], spark=spark)
    assert c.queries == s.selected_total and c.log_days == 2
    assert c.with_history > 0.1 * c.queries  # sessions refine queries: history is common
    assert c.with_notes > 0.5 * c.queries

    p = prompts.main(["--dt", dt, "--rules-mode", "compact"], spark=spark)
    assert p.rows == s.selected_total and sum(x["rows"] for x in p.shards) == p.rows
    assert len(p.prefix_hashes) == 1


def test_global_rank_is_a_dense_global_order_across_partitions(spark):
    from pyspark.sql import functions as F

    from qp_core.ops.spark import global_rank

    df = spark.range(0, 5000, numPartitions=7).select(
        F.concat(F.lit("k"), F.col("id").cast("string")).alias("key"), (F.col("id") * 7919 % 101).alias("score"))
    cached: list = []
    ranked = global_rank(df, [F.col("score").desc(), "key"], "rank", cached).collect()
    expected = sorted(((r["score"], r["key"]) for r in df.collect()), key=lambda t: (-t[0], t[1]))
    got = sorted(ranked, key=lambda r: r["rank"])
    assert [r["rank"] for r in got] == list(range(1, 5001))
    assert [(r["score"], r["key"]) for r in got] == expected
    for frame in cached:
        frame.unpersist()


def test_normalized_log_normalises_every_row_and_keeps_every_row(spark):
    """Rows that normalise by ASCII lowering take the JVM path, the others the Python one; both give what
    ``normalize_query`` and ``malformed_reason`` give, one output row per input row."""
    from qp_core.nearline.sample import normalized_log
    from qp_core.normalize import normalize_query

    long_ok = "a" * 64
    raw = ["iPhone 15", "iphone  15", None, "iphone 15", "!!!", "", "iPhone 15", "雅诗兰黛 dw粉底液", "a\n",
           long_ok, long_ok + "b", " iphone 15", "ｉｐｈｏｎｅ", "IPHONE 15 Pro", "Dior口红 999", "A" * 65]
    df = spark.createDataFrame([(f"u{i:02d}", q) for i, q in enumerate(raw)], "user_id string, query string")
    rows = sorted(normalized_log(df, 64).collect(), key=lambda r: r["user_id"])
    assert [r["user_id"] for r in rows] == [f"u{i:02d}" for i in range(len(raw))]  # no row lost or duplicated
    for r, q in zip(rows, raw):
        norm = None if q is None else normalize_query(q)
        reason = malformed_reason(q, norm or "", 64)
        assert (r["query_norm"], r["malformed"], r["bad_query"]) == (norm, reason, q if reason else None), q
    assert [r["malformed"] for r in rows] == [None, None, "null", None, "symbols_only", "empty", None, None, None,
                                              None, "too_long", None, None, None, None, "too_long"]
    usable = sorted(normalized_log(df, 64, well_formed=True).collect(), key=lambda r: r["user_id"])
    assert [tuple(r) for r in usable] == [(r["user_id"], r["query_norm"]) for r in rows if r["malformed"] is None]


def test_normalize_batches_runs_python_once_per_distinct_string(monkeypatch):
    """The Python path: every row gets its columns, Python sees each distinct string once (the dictionary
    of a batch, then the worker's memo), and a bad-UTF-8 value is ``undecodable``."""
    import pyarrow as pa

    from qp_core.nearline import text

    seen: list = []
    real = text.normalize_query
    monkeypatch.setattr(text, "normalize_query", lambda q: seen.append(q) or real(q))
    monkeypatch.setattr(text, "_memo", {})
    raw = [b"iPhone 15", b"iPhone 15", None, b"\xff\xfe x", b"!!!", b"iPhone 15", None]
    batch = pa.RecordBatch.from_arrays(
        [pa.array([f"u{i}" for i in range(len(raw))]), pa.array(raw, pa.binary()).view(pa.string())],
        names=["user_id", "query"])
    out = list(text.normalize_batches([batch, batch], max_chars=64))
    assert sorted(seen) == ["!!!", "iPhone 15"]  # two batches, seven rows each: two Python calls
    for got in out:
        assert got.schema.names == ["user_id", "query_norm", "malformed", "bad_query"]
        assert got.column("user_id").to_pylist() == [f"u{i}" for i in range(len(raw))]
        assert got.column("query_norm").to_pylist() == ["iphone 15", "iphone 15", None, None, "!!!", "iphone 15", None]
        assert got.column("malformed").to_pylist() == [None, None, "null", "undecodable", "symbols_only", None, "null"]
        bad = got.column("bad_query").view(pa.binary()).to_pylist()
        assert bad == [None, None, None, b"\xff\xfe x", b"!!!", None, None]
    # The well-formed rows only, as the history window wants them: no raw string, no reason.
    (usable,) = text.normalize_batches([batch], max_chars=64, well_formed=True)
    assert usable.schema.names == ["user_id", "query_norm"]
    assert usable.to_pydict() == {"user_id": ["u0", "u1", "u5"], "query_norm": ["iphone 15"] * 3}


def test_key_batches_keys_the_well_formed_groups_only():
    import pyarrow as pa

    from qp_core.nearline.text import key_batches

    batch = pa.RecordBatch.from_arrays([pa.array(["iphone 15", "!!!", None]), pa.array([None, "symbols_only", "null"])],
                                       names=["query_norm", "malformed"])
    (out,) = key_batches([batch])
    assert out.column("query_key").to_pylist() == [query_key("iphone 15"), None, None]
