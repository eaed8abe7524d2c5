"""Reader for downstream services: ``QPClient(url).mget(queries)`` / ``.get(query)``, built for a request path.

One network round trip per batch in the steady state. The client remembers the pointer it last saw
and sends, in ONE pipeline, ``GET <pointer>`` followed by the MGETs of ``qp:<ns>:<hash(normalise(q))>``
built from that remembered namespace. If the pointer it reads back still names that namespace (the
steady state), the answers are used as they are; if it moved, the batch is re-read once from the new
namespace (a second round trip, only right after a flip). So an answer is never staler than the
pointer at the moment the batch was read, every answer of a batch comes from one namespace, and a
namespace a batch resolved keeps all its keys for ``retired_ttl_s`` after it stops being active.
(No time-based cache, so no staleness bound to tune; the extra GET rides in the same round trip.)

Fail-soft by default, because the caller always has its own signals to fall back on: a missing,
malformed, non-object or unknown-schema-version value is ``None`` for that key only, a query that
cannot be keyed (not a string; lone surrogates are dropped by normalisation) is ``None``, and a Redis
outage (refused, reset, timeout after ``reader_timeout_s``, no retries) is all-``None`` at once; after an outage the client
does not dial again for ``reader_outage_backoff_s``, so a dead server costs microseconds, not a
timeout per request. Every such case is counted in ``stats``. ``strict=True`` raises instead.

On a Redis Cluster (``?cluster=true`` URL) the MGETs are grouped per hash slot (a multi-key command
must stay in one slot) and redis-py's cluster pipeline sends each node its share at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from qp_core.kv.layout import Keys
from qp_core.kv.settings import KVSettings, connect, load_kv_settings
from qp_core.normalize import query_key
from qp_core.schema import SCHEMA_VERSION

SUPPORTED_VERSIONS = frozenset({SCHEMA_VERSION})
# msgspec's JSON decoder: 2.5x json.loads on these values (bytes in, no str round trip); a 50-key batch
# spends most of its client-side time decoding. Invalid JSON or UTF-8 raises DecodeError (a ValueError).
_decode_json = msgspec.json.Decoder().decode


class KVReadError(RuntimeError):
    """Strict mode only: a value could not be used, or Redis could not be read."""


class QPClient:
    def __init__(self, url: str | None = None, *, settings: KVSettings | None = None, redis=None,
                 strict: bool = False):
        self.settings = settings or load_kv_settings()
        self.keys = Keys(self.settings.prefix)
        self.strict = strict
        self.stats: Counter[str] = Counter()
        self._url = url
        self._r = redis
        self._ns: str | None = None  # the pointer as last read: the guess the next batch is built on
        self._down_until = 0.0

    # ---- connection ------------------------------------------------------------------------------
    @property
    def r(self):
        """The connection, made on first use (a cluster client dials at construction; an outage then must
        not escape from ``__init__``)."""
        if self._r is None:
            self._r = connect(self._url, self.settings, timeout_s=self.settings.reader_timeout_s, retries=0,
                              decode_responses=False)
        return self._r

    @property
    def cluster(self) -> bool:
        return hasattr(self.r, "get_nodes")

    # ---- reading ---------------------------------------------------------------------------------
    def namespace(self) -> str | None:
        """The active namespace now (None before the first activation); one GET, not cached."""
        raw = self.r.get(self.keys.active)
        return raw.decode() if isinstance(raw, bytes) else raw or None

    def mget_with_namespace(self, queries: Sequence[Any]) -> tuple[str | None, list[dict[str, Any] | None]]:
        """(namespace read, one result or None per query, in order)."""
        n = len(queries)
        if not n:
            return self._ns, []
        qkeys = [self._query_key(q) for q in queries]
        if time.monotonic() < self._down_until and not self.strict:
            self.stats["skipped_outage"] += 1
            return None, [None] * n
        try:
            ns, raws = self._read(self._ns, qkeys)
            if ns != self._ns:  # first batch, or the pointer moved since the last one: read again from it
                self._ns = ns
                self.stats["pointer_changed"] += 1
                if ns is not None:
                    ns2, raws = self._read(ns, qkeys)
                    if ns2 != ns:  # flipped again in between: the next batch follows; this one stays on ns
                        self._ns = ns2
        except Exception as exc:  # noqa: BLE001 - redis.RedisError, OSError, cluster errors: all mean "no answer"
            import redis

            if not isinstance(exc, (redis.RedisError, redis.exceptions.RedisClusterException, OSError)):
                raise
            self.stats["unavailable"] += 1
            self._down_until = time.monotonic() + self.settings.reader_outage_backoff_s
            if self.strict:
                raise KVReadError(f"Redis read failed: {type(exc).__name__}: {exc}") from exc
            return None, [None] * n
        if ns is None:
            self.stats["no_pointer"] += 1
            return None, [None] * n
        return ns, [self._decode(raw, k, q) for raw, k, q in zip(raws, qkeys, queries)]

    def _read(self, ns: str | None, qkeys: list[str | None]) -> tuple[str | None, list[Any]]:
        """One pipeline: GET pointer + the MGETs of ``ns``'s keys. Returns (pointer, raw values per query)."""
        keys = [self.keys.result(ns, k) if ns is not None and k is not None else None for k in qkeys]
        wanted = [k for k in keys if k is not None]
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.active)
        if self.cluster:
            groups: dict[int, list[str]] = {}
            for key in wanted:
                groups.setdefault(self.r.keyslot(key), []).append(key)
            chunks = [g[i:i + self.settings.mget_chunk] for g in groups.values()
                      for i in range(0, len(g), self.settings.mget_chunk)]
        else:
            step = self.settings.mget_chunk
            chunks = [wanted[i:i + step] for i in range(0, len(wanted), step)]
        for chunk in chunks:
            pipe.execute_command("MGET", *chunk)  # (the cluster pipeline refuses .mget(); one slot per chunk here)
        replies = pipe.execute()
        pointer = replies[0].decode() if isinstance(replies[0], bytes) else replies[0]
        found = {k: v for chunk, values in zip(chunks, replies[1:]) for k, v in zip(chunk, values)}
        return pointer or None, [found.get(k) if k is not None else None for k in keys]

    def _query_key(self, query: Any) -> str | None:
        try:
            return query_key(query) if isinstance(query, str) else None
        except (UnicodeError, ValueError):  # defensive: normalize_query drops lone surrogates, so none reach here
            return None

    def _decode(self, raw: bytes | str | None, qkey: str | None, query: Any) -> dict[str, Any] | None:
        if raw is None:  # a query that cannot be keyed is a miss even in strict mode: it can never be stored
            self.stats["miss" if qkey is not None else "bad_query"] += 1
            return None
        try:
            value = _decode_json(raw)
        except ValueError:  # msgspec.DecodeError: not JSON, not UTF-8
            return self._reject("malformed", query)
        if not isinstance(value, dict):
            return self._reject("not_object", query)
        version = value.get("v")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            return self._reject("unknown_version", query)
        self.stats["hit"] += 1
        return value

    def _reject(self, reason: str, query: Any) -> None:
        self.stats[reason] += 1
        if self.strict:
            raise KVReadError(f"stored value for {query!r} is unusable: {reason}")
        return None

    def mget(self, queries: Sequence[Any]) -> list[dict[str, Any] | None]:
        """One result dict (unified fields + q, src, dt, v) or None per query."""
        return self.mget_with_namespace(queries)[1]

    def get(self, query: Any) -> dict[str, Any] | None:
        return self.mget([query])[0]

    def close(self) -> None:
        if self._r is not None:
            self._r.close()

    def __enter__(self) -> QPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
