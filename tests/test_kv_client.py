"""The reader on a request path, against real servers (standalone and a 3-node cluster): one round trip per
batch in the steady state, per-key fail-soft, any query string, a fast all-None on an outage, strict mode."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from qp_core.kv import KVPublisher, KVReadError, QPClient
from qp_core.normalize import query_key
from tests.test_kv_store import QUERIES, make_rows, settings

pytestmark = pytest.mark.redis


@pytest.fixture()
def clean_redis(kv_redis):
    return kv_redis


@pytest.fixture()
def published(clean_redis):
    pub = KVPublisher(clean_redis, settings=settings())
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    assert pub.activate("nsA").activated
    return pub


def count_round_trips(client: QPClient, monkeypatch) -> list[int]:
    """Count pipeline executions of the client's connection (each is ONE round trip; a cluster pipeline
    writes to every node first, then reads, so its nodes are served at once) and any direct command."""
    calls = [0]
    r = client.r
    make_pipe = r.pipeline

    def pipeline(*a, **kw):
        pipe = make_pipe(*a, **kw)
        execute = pipe.execute

        def counted(*ea, **ekw):
            calls[0] += 1
            return execute(*ea, **ekw)

        pipe.execute = counted
        return pipe

    def direct(*a, **kw):
        calls[0] += 1
        return type(r).execute_command(r, *a, **kw)

    monkeypatch.setattr(r, "pipeline", pipeline)
    monkeypatch.setattr(r, "execute_command", direct)
    return calls


def test_one_round_trip_per_batch_in_steady_state(published, clean_redis, monkeypatch):
    client = QPClient(clean_redis, settings=settings(mget_chunk=7))
    calls = count_round_trips(client, monkeypatch)
    batch = QUERIES[:50]
    assert all(client.mget(batch))  # first batch: no pointer known yet -> read it, then the batch
    assert calls[0] == 2
    for _ in range(20):
        assert all(client.mget(batch))
    assert calls[0] == 2 + 20, "steady state: pointer check and MGETs share one round trip"
    # after a flip the first batch reads again from the new namespace, then one round trip again
    published.publish(make_rows(QUERIES, "B"), "nsB", "2026-11-02")
    assert published.activate("nsB").activated
    got = client.mget(batch)
    assert {g["intent_desc"][0] for g in got} == {"B"} and calls[0] == 22 + 2
    assert {g["intent_desc"][0] for g in client.mget(batch)} == {"B"} and calls[0] == 22 + 3
    assert client.stats["pointer_changed"] == 2


def test_per_key_fail_soft_and_strict(published, clean_redis):
    r = published.r
    key = lambda q: f"qp:nsA:{query_key(q)}"  # noqa: E731
    bad = {QUERIES[1]: "{not json", QUERIES[2]: "[1, 2, 3]", QUERIES[3]: json.dumps({"q": "x", "v": 99}),
           QUERIES[4]: b"\xff\xfe\x00", QUERIES[5]: json.dumps({"q": "x", "v": True}), QUERIES[6]: "null"}
    for q, value in bad.items():
        r.set(key(q), value)
    client = QPClient(clean_redis, settings=settings())
    got = client.mget(QUERIES[:8])
    assert got[0] is not None and got[7] is not None
    assert got[1:7] == [None] * 6
    assert (client.stats["malformed"], client.stats["not_object"], client.stats["unknown_version"]) == (2, 2, 2)
    assert client.stats["hit"] == 2
    strict = QPClient(clean_redis, settings=settings(), strict=True)
    assert strict.get(QUERIES[0]) is not None and strict.get("never published") is None  # a miss is no error
    for q in bad:
        with pytest.raises(KVReadError):
            strict.get(q)


def test_any_query_string_is_accepted(published, clean_redis):
    queries = ["\ud800", "a\udfffb " + QUERIES[0], "", "   ", "\x00\u202e", QUERIES[0], "x" * 100_000, None, 42]
    for strict in (False, True):
        client = QPClient(clean_redis, settings=settings(), strict=strict)
        got = client.mget(queries)
        assert [g is not None for g in got] == [False] * 5 + [True, False, False, False]
    # normalize_query drops lone surrogates (as the writer does), so those two are keyed and miss;
    # only the non-strings cannot be keyed
    assert client.stats["bad_query"] == 2  # None, 42
    assert client.stats["miss"] >= 2


def _stalled_server(tmp_path):
    from qp_core.ops import redis_server as rs

    run_dir = tmp_path / "srv"
    server = rs.start(run_dir, write_url_file=False, persist=False)
    return rs, run_dir, server


def test_outage_returns_all_none_quickly_then_recovers(tmp_path):
    """A stalled server (SIGSTOP: accepts nothing, answers nothing) costs one short timeout, then nothing
    while the backoff lasts; a dead server is the same; the reader recovers by itself."""
    rs, run_dir, server = _stalled_server(tmp_path)
    try:
        s = settings(reader_timeout_s=0.1, reader_outage_backoff_s=0.3)
        pub = KVPublisher(server.url, settings=s)
        pub.publish(make_rows(QUERIES[:10], "A"), "nsA", "2026-11-01")
        pub.activate("nsA")
        client = QPClient(server.url, settings=s)
        assert all(client.mget(QUERIES[:10]))
        os.kill(server.pid, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            assert client.mget(QUERIES[:10]) == [None] * 10
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            assert client.mget(QUERIES[:10]) == [None] * 10
            second = time.perf_counter() - t0
            assert first < 0.25, f"one stalled batch took {first:.3f}s (timeout 0.1s, no retries)"
            assert second < 0.01, f"inside the backoff the reader must not dial ({second:.4f}s)"
            assert client.stats["unavailable"] == 1 and client.stats["skipped_outage"] == 1
            with pytest.raises(KVReadError):
                QPClient(server.url, settings=s, strict=True).get(QUERIES[0])
        finally:
            os.kill(server.pid, signal.SIGCONT)
        time.sleep(0.35)
        assert all(client.mget(QUERIES[:10])), "the reader recovers once the server answers again"
        rs.stop(run_dir)
        t0 = time.perf_counter()
        assert client.mget(QUERIES[:3]) == [None] * 3 and time.perf_counter() - t0 < 0.5
    finally:
        rs.stop(run_dir)


def test_cluster_reader_groups_keys_per_slot(redis_cluster_url):
    """On the cluster, one batch touches every node (keys spread over slots) yet answers in request order."""
    from tests.fixtures.redis_server import flush

    flush(redis_cluster_url)
    pub = KVPublisher(redis_cluster_url, settings=settings())
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    pub.activate("nsA")
    client = QPClient(redis_cluster_url, settings=settings())
    nodes = {client.r.get_node_from_key(f"qp:nsA:{query_key(q)}").name for q in QUERIES}
    assert len(nodes) == 3, "result keys must spread over all three primaries"
    controls = {client.r.keyslot(k) for k in (pub.keys.active, pub.keys.history, pub.keys.meta("nsA"))}
    assert len(controls) == 1, "control keys share one hash slot (atomic pointer flip)"
    got = client.mget(QUERIES[::-1])
    assert [g["intent_desc"].split("|")[1] for g in got] == [r["query_norm"] for r in make_rows(QUERIES[::-1], "A")]
