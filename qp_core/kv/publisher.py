"""Writer: validated rows of ``curated/qp_results`` -> one namespace, at the speed the server allows.

Nothing unvalidated reaches readers: every row passes :func:`qp_core.kv.rows.check_row`, the same
function the validate step runs. It runs here again only when the caller cannot vouch for the rows
(``prevalidated=False``, the default); the daily step vouches when the partition's ``_quality.json``
proves it is the untouched output of this same check (``rows.partition_prevalidated``).

Fast paths, each measured (``python -m qp_core.bench.kv``, docs/kv-spec.md §10): no GET per SET — a
batch is ``MULTI; EXISTS k1..kn; MSET k1 v1 ..; EXEC`` (the EXISTS counts new keys for ``key_count``,
atomically with the write); commands packed by hiredis and written on a pooled redis-py connection
without ``Pipeline``'s per-command bookkeeping, each batch sent as soon as it is encoded and the
replies read per chunk, so the server stores one batch while the next is encoded; prevalidated values
built by string concatenation from the canonical ``result_json`` (no JSON round trip); the garbage
collector paused during the loop; ``publish_workers`` processes, each with its own connection, for
the CPU share of checking rows. On a Redis Cluster each batch goes through redis-py's cluster pipeline
(slot routing, MOVED/ASK), with ``SET NX`` telling new keys from refreshed ones.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from typing import Any

import hiredis

from qp_core.kv import faults
from qp_core.kv.admin import Activation, KVAdmin, utc_now
from qp_core.kv.layout import check_namespace
from qp_core.kv.rows import check_row
from qp_core.kv.settings import KVSettings, connect, resolve_url
from qp_core.schema import SCHEMA_VERSION

_encode_str = json.encoder.encode_basestring
_MULTI, _EXEC = hiredis.pack_command(("MULTI",)), hiredis.pack_command(("EXEC",))

logger = logging.getLogger(__name__)

VERSION_FIELDS = ("model_version", "rules_version", "prompt_version")


@dataclass
class PublishReport:
    namespace: str
    dt: str
    rows: int = 0
    written: int = 0
    new_keys: int = 0
    refreshed: int = 0
    rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    prevalidated: bool = False
    workers: int = 1
    published: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (query_key, query_norm)

    @property
    def keys_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("published")
        d["keys_per_s"] = round(self.keys_per_s, 1)
        return d


def encode_checked(result_json: str, query_norm: str, src: str, dt: str) -> str:
    """``layout.encode_value`` of a canonical ``result_json`` without parsing it: the same bytes, ~10x cheaper
    (``encode_basestring`` is the C string encoder ``json.dumps(..., ensure_ascii=False)`` ends in)."""
    return f'{result_json[:-1]},"q":{_encode_str(query_norm)},"src":"{src}","dt":"{dt}","v":{SCHEMA_VERSION}}}'



@dataclass
class _Chunk:
    written: int = 0
    new: int = 0
    reasons: Counter = field(default_factory=Counter)
    published: list[tuple[str, str]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    versions_from_model: bool = False


def _note_versions(rows: list[Mapping[str, Any]], out: _Chunk) -> None:
    for row in rows:  # the versions of the first model row (else of the first row that has any)
        if out.versions_from_model:
            return
        if row.get("model_version"):
            out.versions = {k: str(row[k]) for k in VERSION_FIELDS if row.get(k)}
            out.versions_from_model = (row.get("src") or "model") == "model"


def _prepare(rows: list[Mapping[str, Any]], prefix: str, ns: str, dt: str, prevalidated: bool,
             out: _Chunk) -> tuple[int, dict[str, str]]:
    """(publishable rows, {key: value}); a key twice keeps its last value; rejects go to ``out.reasons``."""
    if prevalidated:
        accepted, good = rows, rows
    else:
        accepted, good = [], []
        for row in rows:
            checked = check_row(row)
            if isinstance(checked, str):
                out.reasons[checked] += 1
            else:
                accepted.append(row)
                good.append(checked._asdict())  # canonical result_json, recomputed key, src
    _note_versions(accepted, out)
    out.published.extend((row["query_key"], row["query_norm"]) for row in good)
    head, tail = f"{prefix}:{ns}:", f'","dt":"{dt}","v":{SCHEMA_VERSION}}}'
    # encode_checked inlined (this loop is the publisher's hot path)
    return len(good), {
        head + row["query_key"]:
            f'{row["result_json"][:-1]},"q":{_encode_str(row["query_norm"])},"src":"{row.get("src") or "model"}{tail}'
        for row in good}


def _cluster_batch(r, batch: dict[str, str]) -> int:
    """RedisCluster (its pipeline routes by slot and follows MOVED/ASK): ``SET NX`` says atomically, per key,
    whether the key is new; the keys that existed are then refreshed with a plain ``SET``."""
    pipe = r.pipeline(transaction=False)
    for k, v in batch.items():
        pipe.execute_command("SET", k, v, "NX")
    existed = [k for k, ok in zip(batch, pipe.execute()) if not ok]
    if existed:
        pipe = r.pipeline(transaction=False)
        for k in existed:
            pipe.execute_command("SET", k, batch[k])
        pipe.execute()
    return len(batch) - len(existed)


def _publish_rows(r, rows: list[Mapping[str, Any]], prefix: str, ns: str, dt: str, prevalidated: bool,
                  batch_size: int, fence: Callable[[], None] | None = None) -> _Chunk:
    """Check/encode and write ``rows`` in batches of ``batch_size``; returns counts (runs in a worker too).

    Standalone: each batch is ``MULTI; EXISTS k1..kn; MSET ...; EXEC`` — atomic, so two writers of the same
    key (worker processes, a zombie) can never both count it as new — sent as soon as it is encoded; the
    replies are read only after the last batch, so the server stores batch i while this process encodes
    batch i+1 (the server buffers the few small replies per batch).
    """
    out = _Chunk()
    cluster = hasattr(r, "get_nodes")
    conn = None if cluster else r.connection_pool.get_connection()
    in_flight: list[int] = []  # distinct keys per batch sent
    try:
        for i in range(0, len(rows), batch_size):
            n, batch = _prepare(rows[i:i + batch_size], prefix, ns, dt, prevalidated, out)
            out.written += n
            if not batch:
                continue
            if fence is not None:
                fence()
            faults.point("publish.batch")
            if cluster:
                out.new += _cluster_batch(r, batch)
                continue
            # hiredis packs in C (redis-py's packer would call it too, after a Python pass over every argument)
            conn.send_packed_command([_MULTI, hiredis.pack_command(("EXISTS", *batch)),
                                      hiredis.pack_command(("MSET", *chain.from_iterable(batch.items()))), _EXEC])
            in_flight.append(len(batch))
        for distinct in in_flight:
            for _ in range(3):  # OK, QUEUED, QUEUED
                conn.read_response()
            existed, _ok = conn.read_response()
            out.new += distinct - int(existed)
    except BaseException:
        if conn is not None:
            conn.disconnect()  # unread replies must not reach the next user of this connection
        raise
    finally:
        if conn is not None:
            r.connection_pool.release(conn)
    return out


_WORKER_REDIS = None
_FORK_ROWS: list | None = None  # the rows, inherited by forked workers: they get slices, not pickled rows


def _worker_init(url: str, settings: KVSettings) -> None:
    global _WORKER_REDIS
    _WORKER_REDIS = connect(url, settings)


def _worker_publish(args: tuple) -> _Chunk:
    rows = _FORK_ROWS[args[0]] if isinstance(args[0], slice) else args[0]
    return _publish_rows(_WORKER_REDIS, rows, *args[1:])


def _fenced_map(pool: ProcessPoolExecutor, args: Iterator[tuple], fence: Callable[[], None] | None,
                window: int) -> Iterator[_Chunk]:
    """Results in order, at most ``window`` chunks in flight, ``fence`` before each chunk is handed out."""
    pending: deque = deque()
    for a in args:
        if fence is not None:
            fence()
        pending.append(pool.submit(_worker_publish, a))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunks(records: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


class KVPublisher:
    """``KVPublisher(url).publish(records, ns, dt)`` then ``.activate(ns, min_coverage)``."""

    def __init__(self, url: str | None = None, *, settings: KVSettings | None = None, redis=None):
        self.url = url
        self.admin = KVAdmin(url, settings=settings, redis=redis)
        self.settings = self.admin.settings
        self.r = self.admin.r
        self.keys = self.admin.keys

    def publish(self, records: Iterable[Mapping[str, Any]], ns: str, dt: str,
                meta: Mapping[str, Any] | None = None, fence: Callable[[], None] | None = None, *,
                prevalidated: bool = False, workers: int | None = None) -> PublishReport:
        """Write every valid record under ``ns`` (add or refresh); reject and count the rest.

        Idempotent: the same records and ``dt`` write the same bytes, and ``key_count`` grows only by keys
        that did not exist before their batch (a crash before the metadata update is repaired by the daily
        step's recount, see ``kv.lease``). No key gets a TTL (retirement is a deadline, see ``kv.admin``).
        ``prevalidated=True`` skips :func:`check_row` (only for rows proven to have passed it);
        ``workers`` (default ``publish_workers``) > 1 spreads batches over that many processes.
        ``fence`` (e.g. a lease's ``renew``) runs before every batch is sent (before every chunk of
        ``10 * batch_size`` rows with workers) and before the metadata update; it raises to stop a
        publisher that lost its lease.
        """
        check_namespace(ns)
        start = time.perf_counter()
        workers = workers or self.settings.publish_workers
        report = PublishReport(namespace=ns, dt=str(dt), prevalidated=prevalidated, workers=workers)
        reasons: Counter[str] = Counter()
        versions: dict[str, str] = {}
        versions_from_model = False
        self.admin.register(ns)
        global _FORK_ROWS
        chunk_rows = self.settings.batch_size * 10
        tail = (self.keys.prefix, ns, str(dt), prevalidated, self.settings.batch_size)
        args: Iterator[tuple] = ((chunk, *tail) for chunk in _chunks(records, chunk_rows))
        results: Iterable[_Chunk]
        if workers > 1:
            import multiprocessing

            # fork where there is one: a worker starts in ms, opens its own connection (_worker_init) and
            # reads its slice of the rows from the memory it inherited (shipping rows costs what encoding does)
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            if method == "fork":
                _FORK_ROWS = records if isinstance(records, list) else list(records)
                args = ((slice(i, i + chunk_rows), *tail) for i in range(0, len(_FORK_ROWS), chunk_rows))
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                       initializer=_worker_init,
                                       initargs=(resolve_url(self.url, self.settings), self.settings))
            results = _fenced_map(pool, args, fence, window=2 * workers)
        else:
            pool = None
            results = (_publish_rows(self.r, *a, fence=fence) for a in args)
        gc_was_on = gc.isenabled()
        gc.disable()  # the loop allocates millions of short-lived tuples and no cycles: a full collection
        try:          # would rescan every row held by the caller, again and again (measured: ~1/3 of the time)
            for part in results:
                report.rows += part.written + sum(part.reasons.values())
                report.written += part.written
                report.new_keys += part.new
                reasons.update(part.reasons)
                report.published.extend(part.published)
                if not versions_from_model and part.versions:
                    versions, versions_from_model = part.versions, part.versions_from_model
        finally:
            if gc_was_on:
                gc.enable()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
                _FORK_ROWS = None
        report.refreshed = report.written - report.new_keys
        if fence is not None:
            fence()
        report.rejected = sum(reasons.values())
        report.reject_reasons = dict(reasons)
        if fence is not None:
            fence()
        mkey = self.keys.meta(ns)
        last_dt = max(self.r.hget(mkey, "last_dt") or "", str(dt))  # a rerun of an old date doesn't move it back
        fields = {"last_publish": utc_now(), "last_dt": last_dt, **versions, **dict(meta or {})}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(mkey, mapping={k: str(v) for k, v in fields.items()})
        pipe.hincrby(mkey, "key_count", report.new_keys)
        pipe.execute()
        report.seconds = time.perf_counter() - start
        if report.rejected:
            logger.warning("publish %s dt=%s rejected %d rows: %s", ns, dt, report.rejected, dict(reasons))
        logger.info("published %d keys (%d new) into %s in %.2fs (%.0f keys/s, %d workers)", report.written,
                    report.new_keys, ns, report.seconds, report.keys_per_s, workers)
        return report

    def activate(self, ns: str, min_coverage: float | None = None, *, force: bool = False) -> Activation:
        return self.admin.activate(ns, min_coverage, force=force)

    def rollback(self) -> Activation:
        return self.admin.rollback()
