"""Namespace lifecycle: registry, the active pointer, activation behind a coverage gate, rollback + pin, retirement.

Why a pointer and namespaces instead of overwriting keys: a new model's answers are written into
a namespace nobody reads yet; only when enough of it exists (the coverage gate) does one atomic
write of the pointer make it live, and one write back makes the previous model live again. Readers
resolve the pointer once per batch, so every answer in a batch comes from one namespace.

Every state change is ONE Lua script over the control keys (all in the ``{prefix}`` hash slot, see
``layout.Keys``) that compare-and-sets what it depends on: the pointer's current value, the
namespace's ``status`` (``filling`` | ``active`` | ``retired`` | ``deleting``) and the pin. Two operators,
the daily run's auto-activation and the janitor therefore serialise on the server; a kill -9 of any
client leaves either the old or the new state, never half of one. Result keys never get a TTL:
retirement records a deadline (``retire_deadline`` + the ``retiring`` sorted set) and the janitor
(``kv.janitor``) deletes the namespace after it, so the active namespace cannot carry a TTL.
Invariants: docs/kv-spec.md §5.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from redis.exceptions import ResponseError

from qp_core.kv import faults
from qp_core.kv.layout import Keys, check_namespace
from qp_core.kv.settings import KVSettings, connect, load_kv_settings

logger = logging.getLogger(__name__)

# KEYS: active, history, events, pin, retiring, meta(target), meta(current or target)
# ARGV: mode, target, expected_current, history_max, event_json, now_iso, retire_deadline, pin_mode, pin_json
_FLIP_LUA = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[3] then
  return redis.error_reply('CONFLICT pointer is ' .. cur .. ', expected ' .. ARGV[3])
end
local pin = redis.call('GET', KEYS[4])
if pin and ARGV[8] == 'respect' then
  local pinned = cjson.decode(pin)['ns']
  if pinned ~= ARGV[2] then return redis.error_reply('PINNED pointer pinned to ' .. tostring(pinned)) end
end
local st = redis.call('HGET', KEYS[6], 'status')
if not st then return redis.error_reply('GONE namespace ' .. ARGV[2] .. ' does not exist') end
if st == 'deleting' then return redis.error_reply('DELETING namespace ' .. ARGV[2] .. ' is being deleted') end
local max = tonumber(ARGV[4])
if ARGV[1] == 'rollback' then
  if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return redis.error_reply('CONFLICT history head changed') end
  redis.call('LPOP', KEYS[2])
elseif cur == ARGV[2] then
  return cur
elseif cur ~= '' then
  redis.call('LPUSH', KEYS[2], cur)
  redis.call('LTRIM', KEYS[2], 0, max - 1)
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[6], 'status', 'active', 'activated_at', ARGV[6])
redis.call('HDEL', KEYS[6], 'retire_deadline', 'retired_at')
redis.call('ZREM', KEYS[5], ARGV[2])
if cur ~= '' and cur ~= ARGV[2] and redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('HSET', KEYS[7], 'status', 'retired', 'retired_at', ARGV[6], 'retire_deadline', ARGV[7])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[7]), cur)
end
if ARGV[8] == 'unpin' then
  redis.call('DEL', KEYS[4])
elseif ARGV[8] == 'set' then
  redis.call('SET', KEYS[4], ARGV[9])
end
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, max - 1)
return cur
"""

# KEYS: active, meta, retiring, events.  ARGV: op ('retire'|'revive'), ns, deadline, now_iso, event_json, history_max
_STATE_LUA = """
local st = redis.call('HGET', KEYS[2], 'status')
if not st then return redis.error_reply('GONE namespace ' .. ARGV[2] .. ' does not exist') end
if st == 'deleting' then return redis.error_reply('DELETING namespace ' .. ARGV[2] .. ' is being deleted') end
if ARGV[1] == 'retire' then
  if (redis.call('GET', KEYS[1]) or '') == ARGV[2] then
    return redis.error_reply('ACTIVE refusing to retire the active namespace ' .. ARGV[2])
  end
  redis.call('HSET', KEYS[2], 'status', 'retired', 'retired_at', ARGV[4], 'retire_deadline', ARGV[3])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), ARGV[2])
else
  if st ~= 'retired' then return st end
  redis.call('HSET', KEYS[2], 'status', 'filling')
  redis.call('HDEL', KEYS[2], 'retire_deadline', 'retired_at')
  redis.call('ZREM', KEYS[3], ARGV[2])
end
redis.call('LPUSH', KEYS[4], ARGV[5])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
return redis.call('HGET', KEYS[2], 'status')
"""

# KEYS: pin, active, events.  ARGV: op ('pin'|'unpin'), value_json | expected_raw ('' = any), event_json, history_max
_PIN_LUA = """
if ARGV[1] == 'pin' then
  local ns = cjson.decode(ARGV[2])['ns']
  if (redis.call('GET', KEYS[2]) or '') ~= ns then
    local active = tostring(redis.call('GET', KEYS[2]))
    return redis.error_reply('CONFLICT can only pin the active namespace (active: ' .. active .. ')')
  end
  redis.call('SET', KEYS[1], ARGV[2])
else
  local cur = redis.call('GET', KEYS[1])
  if not cur then return 0 end
  if ARGV[2] ~= '' and cur ~= ARGV[2] then return redis.error_reply('CONFLICT the pin changed meanwhile') end
  redis.call('DEL', KEYS[1])
end
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return 1
"""

SCAN_COUNT = 1000


class KVError(RuntimeError):
    """An operation on the KV store was refused (unknown/deleted namespace, conflict, nothing to roll back to...)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def script_error(exc: Exception) -> tuple[str, str]:
    """(code, message) of a refusal raised by one of our Lua scripts, e.g. ('CONFLICT', 'pointer is ...')."""
    text = str(exc)
    code, _, rest = text.partition(" ")
    return code, rest or text


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
        self._state = self.r.register_script(_STATE_LUA)
        self._pin = self.r.register_script(_PIN_LUA)

    # ---- reading state -------------------------------------------------------------------------
    def active(self) -> str | None:
        return self.r.get(self.keys.active) or None

    def history(self) -> list[str]:
        return self.r.lrange(self.keys.history, 0, -1)

    def events(self, n: int = 20) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.r.lrange(self.keys.events, 0, n - 1)]

    def meta(self, ns: str) -> dict[str, str]:
        return self.r.hgetall(self.keys.meta(ns))

    def status(self, ns: str) -> str | None:
        return self.r.hget(self.keys.meta(ns), "status")

    def exists(self, ns: str) -> bool:
        """A namespace exists while its metadata hash does (the janitor deletes it last)."""
        return bool(self.r.exists(self.keys.meta(ns)))

    def pinned(self) -> dict[str, Any] | None:
        raw = self.r.get(self.keys.pin)
        return json.loads(raw) if raw else None

    def namespaces(self) -> list[str]:
        """Known namespaces, oldest first (registry entries without metadata are pruned here)."""
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

    def recount(self, ns: str) -> int:
        """Set ``key_count`` to the exact number of result keys (after a crashed publish; caller holds the lease)."""
        n = self.count_keys(ns)
        self.r.hset(self.keys.meta(ns), "key_count", n)
        return n

    def info(self) -> dict[str, Any]:
        active = self.active()
        out = {"active": active, "pinned": self.pinned(), "history": self.history(), "namespaces": {},
               "events": self.events(10)}
        for ns in self.namespaces():
            meta = self.meta(ns)
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

    def retire_deadline(self, ns: str) -> int | None:
        """Unix time after which the janitor deletes a retired namespace, or None when it is not retired."""
        value = self.r.hget(self.keys.meta(ns), "retire_deadline")
        return int(value) if value else None

    # ---- coverage gate ---------------------------------------------------------------------------
    def coverage(self, ns: str, against: str | None = None) -> tuple[float, int]:
        """Share of ``against``'s queries (default: the active namespace) that ``ns`` also holds.

        Measured on up to ``coverage_sample`` keys in SCAN order with one EXISTS per key, pipelined (per-key,
        so the keys may sit in different cluster slots). With nothing to compare against (first model, or
        ``ns`` is active) it is 1.0 if ``ns`` holds any key, else 0.0. Returns (coverage, keys compared).
        """
        against = against if against is not None else self.active()
        if not against or against == ns:
            return (1.0 if next(self.scan_keys(ns, 1), None) else 0.0), 0
        src_prefix = f"{self.keys.prefix}:{against}:"
        sampled = hit = 0
        pipe = self.r.pipeline(transaction=False)
        for key in self.scan_keys(against, self.settings.coverage_sample):
            pipe.exists(self.keys.result(ns, key[len(src_prefix):]))
            sampled += 1
            if sampled % SCAN_COUNT == 0:
                hit += sum(pipe.execute())
        hit += sum(pipe.execute())
        if sampled == 0:
            return (1.0 if next(self.scan_keys(ns, 1), None) else 0.0), 0
        return hit / sampled, sampled

    # ---- retirement (the janitor deletes after the deadline) ----------------------------------------
    def _run_state(self, op: str, ns: str, deadline: int = 0) -> str:
        check_namespace(ns)
        event = {"at": utc_now(), "action": op, "ns": ns, **({"retire_deadline": deadline} if deadline else {})}
        ev = json.dumps(event)
        try:
            return self._state(keys=[self.keys.active, self.keys.meta(ns), self.keys.retiring, self.keys.events],
                               args=[op, ns, deadline, utc_now(), ev, self.settings.history_max])
        except ResponseError as exc:
            raise KVError(str(exc)) from exc

    def retire(self, ns: str, ttl_s: int | None = None) -> int:
        """Schedule ``ns`` for deletion ``ttl_s`` from now (default ``retired_ttl_s``); returns the deadline.

        No key gets a TTL: the janitor UNLINKs the namespace after the deadline. Refused for the active one.
        """
        deadline = int(time.time()) + (ttl_s or self.settings.retired_ttl_s)
        self._run_state("retire", ns, deadline)
        logger.info("retired namespace %s: deleted by the janitor after %d", ns, deadline)
        return deadline

    def revive(self, ns: str) -> str:
        """Cancel a retired namespace's deletion (status back to ``filling``); refused once deletion started."""
        return self._run_state("revive", ns)

    # ---- pin ---------------------------------------------------------------------------------------
    def _run_pin(self, op: str, value: str, event: dict[str, Any]) -> int:
        try:
            return self._pin(keys=[self.keys.pin, self.keys.active, self.keys.events],
                             args=[op, value, json.dumps(event), self.settings.history_max])
        except ResponseError as exc:
            raise KVError(str(exc)) from exc

    def pin(self, ns: str | None = None, *, reason: str = "", by: str = "operator",
            registry_version: str | None = None) -> dict[str, Any]:
        """Hold the pointer on ``ns`` (default: the active one; refused for any other): auto-activation
        is refused until ``unpin`` or a registry production version other than ``registry_version``."""
        value = {"ns": ns or self.active(), "at": utc_now(), "by": by, "reason": reason,
                 "registry_version": registry_version}
        self._run_pin("pin", json.dumps(value), {"at": value["at"], "action": "pin", **value})
        return value

    def unpin(self, reason: str = "operator", *, expected_raw: str | None = None) -> dict[str, Any] | None:
        """Lift the pin (only if it is still ``expected_raw``, the raw JSON read earlier, when given)."""
        raw = expected_raw if expected_raw is not None else self.r.get(self.keys.pin)
        was = json.loads(raw) if raw else None
        self._run_pin("unpin", expected_raw or "", {"at": utc_now(), "action": "unpin", "was": was, "reason": reason})
        return was

    # ---- pointer ---------------------------------------------------------------------------------
    def _run_flip(self, mode: str, target: str, expected: str | None, event: dict[str, Any],
                  pin_mode: str = "respect", pin: dict[str, Any] | None = None) -> None:
        faults.point(f"{mode}.before_flip")
        deadline = int(time.time()) + self.settings.retired_ttl_s
        meta_cur = self.keys.meta(expected) if expected else self.keys.meta(target)
        self._flip(
            keys=[self.keys.active, self.keys.history, self.keys.events, self.keys.pin, self.keys.retiring,
                  self.keys.meta(target), meta_cur],
            args=[mode, target, expected or "", self.settings.history_max, json.dumps(event), utc_now(), deadline,
                  pin_mode, json.dumps(pin or {})],
        )

    def activate(self, ns: str, min_coverage: float | None = None, *, force: bool = False,
                 unpin: bool = False) -> Activation:
        """Point readers at ``ns`` if its coverage gate passes (``force`` skips the gate, not the checks).

        The flip is refused (``activated=False`` with the reason) when the pointer moved since it was read,
        when a pin holds it on another namespace (``unpin=True`` lifts the pin in the same script), or when
        ``ns`` is being deleted. The previous namespace is retired in the same script.
        """
        check_namespace(ns)
        min_cov = self.settings.min_coverage if min_coverage is None else min_coverage
        if not self.exists(ns):
            raise KVError(f"unknown or deleted namespace {ns}")
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
        event = {"at": utc_now(), "action": "activate", "from": current, "to": ns, "coverage": round(cov, 6),
                 "forced": force, "unpin": unpin}
        try:
            self._run_flip("activate", ns, current, event, "unpin" if unpin else "respect")
        except ResponseError as exc:
            code, msg = script_error(exc)
            if code == "GONE":
                raise KVError(msg) from exc
            logger.warning("activation of %s refused: %s", ns, exc)
            return Activation(False, ns, current, cov, min_cov, reason=f"{code.lower()}: {msg}",
                              extra={"sampled": sampled})
        logger.info("activated namespace %s (previous %s, coverage %.4f)", ns, current, cov)
        return Activation(True, ns, current, cov, min_cov, reason="forced" if force else "coverage gate passed",
                          extra={"sampled": sampled})

    def rollback(self, *, reason: str = "", registry_version: str | None = None) -> Activation:
        """Point readers back at the previous namespace (head of the history) and PIN it there.

        The pin makes the rollback stick: the daily run's auto-activation is refused until ``unpin`` or a
        registry production version other than ``registry_version`` (a new promotion, see ``nearline.publish``).
        """
        current = self.active()
        hist = self.history()
        if not hist:
            raise KVError("nothing to roll back to: pointer history is empty")
        prev = hist[0]
        status = self.status(prev)
        if status is None or status == "deleting":
            raise KVError(f"previous namespace {prev} was deleted after its retire window "
                          f"(retired_ttl_s={self.settings.retired_ttl_s})")
        pin = {"ns": prev, "at": utc_now(), "by": "rollback", "reason": reason, "registry_version": registry_version}
        try:
            self._run_flip("rollback", prev, current,
                           {"at": utc_now(), "action": "rollback", "from": current, "to": prev, "pin": pin},
                           "set", pin)
        except ResponseError as exc:
            raise KVError(f"rollback refused: {exc}") from exc
        logger.info("rolled back %s -> %s (pinned)", current, prev)
        return Activation(True, prev, current, reason="rollback", extra={"pinned": pin})
