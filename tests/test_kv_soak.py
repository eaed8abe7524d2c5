"""Soak: a reader, an operator flipping and rolling back, a publisher and the janitor with a short retire window,
all at once against a real server, bounded in time (docs/kv-spec.md §5 invariants, §7 reader guarantee).

Two readers: QPClient as it is (the pointer checked in the same round trip as every batch) and one that
caches the pointer for ``STALENESS_S`` (well inside the 2 s retire window), as an online reader may. Every namespace holds
the same QUERIES, each answer tagged with its namespace's name, so a batch is
*torn* when an answer's tag differs from the namespace the batch resolved, and a *miss* is any None
(every namespace the pointer can name holds every query: activations pass a coverage gate of 1.0).
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from qp_core.kv import Janitor, KVAdmin, KVError, KVPublisher, PublishLease, QPClient, decode_value
from tests.test_kv_store import QUERIES, make_rows, settings

pytestmark = pytest.mark.redis

NAMESPACES = ("nsA", "nsB", "nsC", "nsD")
MIN_BATCHES = 10_000
TIME_LIMIT_S = 50.0
STALENESS_S = 0.5


@pytest.fixture()
def clean_redis(kv_redis):
    """On a standalone server and on a local 3-node cluster."""
    return kv_redis


def test_soak_reader_operator_publisher_janitor(clean_redis):
    s = settings(retired_ttl_s=2, batch_size=25, min_coverage=1.0, janitor_jitter_ms=5, lease_ttl_s=5)
    rows = {ns: make_rows(QUERIES, ns) for ns in NAMESPACES}
    boot = KVPublisher(clean_redis, settings=s)
    boot.publish(rows["nsA"], "nsA", "2026-11-01")
    assert boot.activate("nsA").activated
    stop = threading.Event()
    stats = {"batches": 0, "torn": 0, "misses": 0, "activations": 0, "rollbacks": 0, "refused": 0,
             "publishes": 0, "publish_refused": 0, "deleted": 0, "unlinked": 0}
    errors: list[BaseException] = []
    batch = QUERIES[::2][:50]

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return threading.Thread(target=run, daemon=True)

    lock = threading.Lock()

    def check(ns, answers):
        with lock:  # two readers update the same counters
            stats["batches"] += 1
            stats["misses"] += sum(a is None for a in answers)
            stats["torn"] += any(a is not None and a["intent_desc"].split("|")[0] != ns for a in answers)

    def reader():  # QPClient as it is: the pointer read with every batch
        client = QPClient(clean_redis, settings=s)
        while not stop.is_set():
            check(*client.mget_with_namespace(batch))

    def cached_reader():  # a reader caching the pointer for STALENESS_S, well inside the retire window
        client = QPClient(clean_redis, settings=s)
        ns, read_at = client.namespace(), time.monotonic()
        while not stop.is_set():
            if time.monotonic() - read_at > STALENESS_S:
                ns, read_at = client.namespace(), time.monotonic()
            keys = [client.keys.for_query(ns, q) for q in batch]
            raws = client.r.mget_nonatomic(keys) if client.cluster else client.r.mget(keys)
            check(ns, [decode_value(v) for v in raws])

    def operator():
        admin = KVAdmin(clean_redis, settings=s)
        rnd = random.Random(1)
        ops = 0
        while not stop.is_set():
            ops += 1
            if ops % 40 == 0:  # a calm spell longer than the retire window: the janitor gets its turn
                stop.wait(s.retired_ttl_s + 1.0)
            try:
                if rnd.random() < 0.3:
                    admin.rollback(reason="soak")
                    stats["rollbacks"] += 1
                else:
                    act = admin.activate(rnd.choice(NAMESPACES), unpin=True)
                    stats["activations" if act.activated else "refused"] += 1
            except KVError:
                stats["refused"] += 1  # nothing to roll back to, namespace deleted or being deleted
            time.sleep(rnd.uniform(0.005, 0.03))

    def publisher():
        admin = KVAdmin(clean_redis, settings=s)
        pub = KVPublisher(settings=s, redis=admin.r)
        rnd = random.Random(2)
        while not stop.is_set():
            ns = rnd.choice(NAMESPACES)
            try:
                with PublishLease(admin, ns) as lease:
                    pub.publish(rows[ns], ns, "2026-11-02", fence=lease.renew)
                stats["publishes"] += 1
            except KVError:
                stats["publish_refused"] += 1  # being deleted right now
            time.sleep(rnd.uniform(0.01, 0.05))

    def janitor():
        jan = Janitor(KVAdmin(clean_redis, settings=s))
        while not stop.is_set():
            report = jan.run()
            stats["deleted"] += len(report.deleted)
            stats["unlinked"] += report.unlinked
            time.sleep(0.05)

    threads = [guard(f) for f in (reader, cached_reader, operator, publisher, janitor)]
    start = time.monotonic()
    for t in threads:
        t.start()
    while not stop.is_set() and time.monotonic() - start < TIME_LIMIT_S:
        if stats["batches"] >= MIN_BATCHES and stats["deleted"] >= 3 and stats["rollbacks"] >= 3:
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    stats["seconds"] = round(time.monotonic() - start, 1)
    admin = KVAdmin(clean_redis, settings=s)
    active = admin.active()
    with_ttl = sum(admin.r.ttl(k) != -1 for k in admin.scan_keys(active))
    counts = {ns: (admin.meta(ns).get("key_count"), admin.count_keys(ns)) for ns in admin.namespaces()}
    stats.update(active=active, active_keys_with_ttl=with_ttl)
    print("\nSOAK " + json.dumps(stats))
    assert not errors, errors
    assert stats["batches"] >= MIN_BATCHES, stats
    assert stats["torn"] == 0 and stats["misses"] == 0 and with_ttl == 0, stats
    assert stats["activations"] > 0 and stats["rollbacks"] > 0 and stats["deleted"] > 0, stats
    assert all(kc == str(n) for kc, n in counts.values()), counts
