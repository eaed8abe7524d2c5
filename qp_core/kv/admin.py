"""Namespace lifecycle: metadata, the active pointer, activation behind a coverage gate, rollback, TTLs.

Why a pointer and namespaces instead of overwriting keys: a new model's answers are written into
a namespace nobody reads yet; only when enough of it exists (the coverage gate) does one atomic
write of the pointer make it live, and one write back makes the previous model live again. Readers
resolve the pointer once per batch, so every answer in a batch comes from one namespace.

The pointer and its history change together in one Lua script with a compare-and-set on the
current value, so two operators flipping at once cannot lose a history entry.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from qp_core.kv.layout import Keys, check_namespace
from qp_core.kv.settings import KVSettings, connect, load_kv_settings

logger = logging.getLogger(__name__)

# KEYS: active, history, events.  ARGV: mode, target, expected_current, history_max, event_json
_FLIP_LUA = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[3] then
  return redis.error_reply('CONFLICT pointer is ' .. cur .. ', expected ' .. ARGV[3])
end
local max = tonumber(ARGV[4])
if ARGV[1] == 'activate' then
  if cur == ARGV[2] then return cur end
  redis.call('SET', KEYS[1], ARGV[2])
  if cur ~= '' then
    redis.call('LPUSH', KEYS[2], cur)
    redis.call('LTRIM', KEYS[2], 0, max - 1)
  end
elseif ARGV[1] == 'rollback' then
  local prev = redis.call('LINDEX', KEYS[2], 0)
  if prev ~= ARGV[2] then
    return redis.error_reply('CONFLICT history head changed')
  end
  redis.call('LPOP', KEYS[2])
  redis.call('SET', KEYS[1], prev)
else
  return redis.error_reply('bad mode')
end
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, max - 1)
return cur
"""

SCAN_COUNT = 1000


class KVError(RuntimeError):
    """An operation on the KV store was refused (unknown/expired namespace, nothing to roll back to...)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Activation:
    """Outcome of ``activate``/``rollback``: whether the pointer moved, from where to where, and why."""

    activated: bool
    namespace: str
    previous: str | None
    coverage: float | None = None
    min_coverage: float | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KVAdmin:
    """Operations on namespaces and the pointer. ``redis`` may be given to share a connection."""

    def __init__(self, url: str | None = None, *, settings: KVSettings | None = None, redis=None):
        self.settings = settings or load_kv_settings()
        self.r = redis if redis is not None else connect(url, self.settings)
        self.keys = Keys(self.settings.prefix)
        self._flip = self.r.register_script(_FLIP_LUA)

    # ---- reading state -------------------------------------------------------------------------
    def active(self) -> str | None:
        return self.r.get(self.keys.active) or None

    def history(self) -> list[str]:
        return self.r.lrange(self.keys.history, 0, -1)

    def events(self, n: int = 20) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.r.lrange(self.keys.events, 0, n - 1)]

    def meta(self, ns: str) -> dict[str, str]:
        return self.r.hgetall(self.keys.meta(ns))

    def exists(self, ns: str) -> bool:
        """A namespace exists while its metadata hash does (it expires together with a retired namespace)."""
        return bool(self.r.exists(self.keys.meta(ns)))

    def namespaces(self) -> list[str]:
        """Known namespaces, oldest first; ones whose TTL ran out are dropped from the registry here."""
        names = sorted(self.r.smembers(self.keys.namespaces))
        alive, gone = [], []
        for ns in names:
            (alive if self.exists(ns) else gone).append(ns)
        if gone:
            self.r.srem(self.keys.namespaces, *gone)
        return sorted(alive, key=lambda n: self.meta(n).get("created", ""))

    def scan_keys(self, ns: str, limit: int | None = None):
        """Result keys of a namespace in SCAN order (no blocking KEYS)."""
        n = 0
        for key in self.r.scan_iter(match=self.keys.result_pattern(ns), count=SCAN_COUNT):
            yield key
            n += 1
            if limit is not None and n >= limit:
                return

    def count_keys(self, ns: str) -> int:
        return sum(1 for _ in self.scan_keys(ns))

    def info(self) -> dict[str, Any]:
        active = self.active()
        out = {"active": active, "history": self.history(), "namespaces": {}, "events": self.events(10)}
        for ns in self.namespaces():
            meta = self.meta(ns)
            meta["ttl_s"] = self.r.ttl(self.keys.meta(ns))
            meta["active"] = ns == active
            out["namespaces"][ns] = meta
        return out

    # ---- namespace registry ----------------------------------------------------------------------
    def register(self, ns: str, **fields: Any) -> None:
        """Create the metadata hash (first time) and record descriptive fields (model, versions...)."""
        check_namespace(ns)
        mkey = self.keys.meta(ns)
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(self.keys.namespaces, ns)
        pipe.hsetnx(mkey, "created", utc_now())
        pipe.hsetnx(mkey, "status", "filling")
        pipe.hsetnx(mkey, "key_count", 0)
        values = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
        if values:
            pipe.hset(mkey, mapping=values)
        pipe.execute()

    def expires_at(self, ns: str) -> int | None:
        """Unix time a retired namespace expires, or None when it does not expire."""
        value = self.r.hget(self.keys.meta(ns), "expires_at")
        return int(value) if value else None

    # ---- coverage gate ---------------------------------------------------------------------------
    def coverage(self, ns: str, against: str | None = None) -> tuple[float, int]:
        """Share of ``against``'s queries (default: the active namespace) that ``ns`` also holds.

        Measured on up to ``coverage_sample`` keys in SCAN order with one multi-key EXISTS per batch.
        With nothing to compare against (first model, or ``ns`` is active) it is 1.0 if ``ns`` holds
        any key, else 0.0. Returns (coverage, keys compared).
        """
        against = against if against is not None else self.active()
        if not against or against == ns:
            return (1.0 if next(self.scan_keys(ns, 1), None) else 0.0), 0
        src_prefix = f"{self.keys.prefix}:{against}:"
        sampled = hit = 0
        batch: list[str] = []

        def flush() -> int:
            return int(self.r.exists(*batch)) if batch else 0

        for key in self.scan_keys(against, self.settings.coverage_sample):
            batch.append(self.keys.result(ns, key[len(src_prefix):]))
            sampled += 1
            if len(batch) >= SCAN_COUNT:
                hit += flush()
                batch = []
        hit += flush()
        if sampled == 0:
            return (1.0 if next(self.scan_keys(ns, 1), None) else 0.0), 0
        return hit / sampled, sampled

    # ---- TTLs ------------------------------------------------------------------------------------
    def _apply_to_keys(self, ns: str, op: str, *args: Any) -> int:
        n = 0
        pipe = self.r.pipeline(transaction=False)
        for key in self.scan_keys(ns):
            getattr(pipe, op)(key, *args)
            n += 1
            if n % self.settings.batch_size == 0:
                pipe.execute()
        pipe.execute()
        return n

    def retire(self, ns: str, ttl_s: int | None = None) -> int:
        """Give every key of ``ns`` (and its metadata) a TTL; returns keys touched. Refuses the active one."""
        if ns == self.active():
            raise KVError(f"refusing to retire the active namespace {ns}")
        ttl_s = ttl_s or self.settings.retired_ttl_s
        deadline = int(time.time()) + ttl_s
        self.r.hset(self.keys.meta(ns), mapping={"status": "retired", "retired_at": utc_now(), "expires_at": deadline})
        n = self._apply_to_keys(ns, "expireat", deadline)
        self.r.expireat(self.keys.meta(ns), deadline)
        logger.info("retired namespace %s: %d keys expire in %ds", ns, n, ttl_s)
        return n

    def revive(self, ns: str) -> int:
        """Remove the TTL of every key of ``ns`` (before it becomes active again)."""
        self.r.persist(self.keys.meta(ns))
        self.r.hdel(self.keys.meta(ns), "expires_at", "retired_at")
        return self._apply_to_keys(ns, "persist")

    # ---- pointer ---------------------------------------------------------------------------------
    def _run_flip(self, mode: str, target: str, expected: str | None, event: dict[str, Any]) -> None:
        self._flip(
            keys=[self.keys.active, self.keys.history, self.keys.events],
            args=[mode, target, expected or "", self.settings.history_max, json.dumps(event)],
        )

    def activate(self, ns: str, min_coverage: float | None = None, *, force: bool = False) -> Activation:
        """Point readers at ``ns`` if its coverage gate passes (``force`` skips the gate, not the checks).

        Order matters for readers: the new namespace loses its TTL before the flip, the old one gets
        its TTL after, so a reader that resolved either pointer finds every key it was promised.
        """
        check_namespace(ns)
        min_cov = self.settings.min_coverage if min_coverage is None else min_coverage
        if not self.exists(ns):
            raise KVError(f"unknown or expired namespace {ns}")
        current = self.active()
        if current == ns:
            return Activation(False, ns, current, reason="already active")
        if next(self.scan_keys(ns, 1), None) is None:  # not even force may point readers at nothing
            return Activation(False, ns, current, 0.0, min_cov, reason="empty namespace")
        cov, sampled = self.coverage(ns, current)
        self.r.hset(self.keys.meta(ns), mapping={"coverage": f"{cov:.6f}", "coverage_vs": current or ""})
        if not force and (cov < min_cov or cov == 0.0):
            logger.warning("coverage gate refused %s: %.4f < %.4f (vs %s, %d keys)", ns, cov, min_cov, current, sampled)
            return Activation(False, ns, current, cov, min_cov, reason="coverage gate",
                              extra={"sampled": sampled})
        self.revive(ns)
        self._run_flip("activate", ns, current, {"at": utc_now(), "action": "activate", "from": current,
                                                 "to": ns, "coverage": round(cov, 6), "forced": force})
        self.r.hset(self.keys.meta(ns), mapping={"status": "active", "activated_at": utc_now()})
        if current:
            self.retire(current)
        logger.info("activated namespace %s (previous %s, coverage %.4f)", ns, current, cov)
        return Activation(True, ns, current, cov, min_cov, reason="forced" if force else "coverage gate passed",
                          extra={"sampled": sampled})

    def rollback(self) -> Activation:
        """Point readers back at the previous namespace (head of the history list)."""
        current = self.active()
        hist = self.history()
        if not hist:
            raise KVError("nothing to roll back to: pointer history is empty")
        prev = hist[0]
        if not self.exists(prev):
            raise KVError(f"previous namespace {prev} has expired (retired_ttl_s={self.settings.retired_ttl_s})")
        self.revive(prev)
        self._run_flip("rollback", prev, current, {"at": utc_now(), "action": "rollback", "from": current, "to": prev})
        self.r.hset(self.keys.meta(prev), mapping={"status": "active", "activated_at": utc_now()})
        if current:
            self.retire(current)
        logger.info("rolled back %s -> %s", current, prev)
        return Activation(True, prev, current, reason="rollback")
