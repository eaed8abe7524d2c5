"""Publish lease: one writer per namespace at a time, fenced by a token, and a marker that survives a crash.

Why: the daily publish can overlap itself (an Airflow retry while a zombie attempt still runs) and the
janitor must never delete a namespace that is being written. ``acquire`` is one Lua script over the
control slot: it refuses a namespace being deleted or leased by another token, registers the
namespace, takes the lease (``SET PX``) and stamps ``publish_token`` in the metadata. The lease is
renewed before every write batch (``renew`` fails once another token took it over: the zombie stops).
``publish_token`` is removed only by a publish that finished cleanly, so the next publish that finds
one knows the last one crashed somewhere between its first SET and its ``key_count`` update, and
recounts (``KVAdmin.recount``): ``key_count`` is exact after any crash + rerun.
"""

from __future__ import annotations

import logging
import secrets

from redis.exceptions import ResponseError

from qp_core.kv.admin import KVAdmin, KVError, utc_now
from qp_core.kv.layout import check_namespace

logger = logging.getLogger(__name__)

# KEYS: lease, meta, namespaces.  ARGV: token, ttl_ms, ns, now_iso
_ACQUIRE_LUA = """
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'deleting' then return redis.error_reply('DELETING namespace ' .. ARGV[3] .. ' is being deleted') end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return redis.error_reply('LEASED namespace ' .. ARGV[3] .. ' is being published (lease ' .. cur .. ')')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSETNX', KEYS[2], 'created', ARGV[4])
redis.call('HSETNX', KEYS[2], 'status', 'filling')
redis.call('HSETNX', KEYS[2], 'key_count', 0)
local unfinished = redis.call('HGET', KEYS[2], 'publish_token') or ''
redis.call('HSET', KEYS[2], 'publish_token', ARGV[1])
return unfinished
"""

# KEYS: lease.  ARGV: token, ttl_ms
_RENEW_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return redis.error_reply('LOST lease taken over by ' .. tostring(cur)) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS: lease, meta.  ARGV: token, clean ('1' also clears the unfinished-publish marker)
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '1' and redis.call('HGET', KEYS[2], 'publish_token') == ARGV[1] then
  redis.call('HDEL', KEYS[2], 'publish_token')
end
return 1
"""


class LeaseLost(KVError):
    """Another publisher took the namespace over (this one stalled past ``lease_ttl_s``): stop writing."""


class PublishLease:
    """``with PublishLease(admin, ns) as lease:`` ... ``publisher.publish(..., fence=lease.renew)``."""

    def __init__(self, admin: KVAdmin, ns: str, ttl_s: float | None = None):
        self.admin, self.ns = admin, check_namespace(ns)
        self.ttl_ms = int(1000 * (ttl_s or admin.settings.lease_ttl_s))
        self.token = secrets.token_hex(8)
        self.previous_unfinished = ""
        r, keys = admin.r, admin.keys
        self._keys = (keys.lease(ns), keys.meta(ns))
        self._acquire = r.register_script(_ACQUIRE_LUA)
        self._renew = r.register_script(_RENEW_LUA)
        self._release = r.register_script(_RELEASE_LUA)

    def acquire(self) -> str:
        """Take the lease; returns the token of a previous publish that never finished ('' if none)."""
        try:
            self.previous_unfinished = self._acquire(
                keys=[*self._keys, self.admin.keys.namespaces], args=[self.token, self.ttl_ms, self.ns, utc_now()])
        except ResponseError as exc:
            raise KVError(str(exc)) from exc
        if self.previous_unfinished:
            logger.warning("namespace %s: the previous publish (%s) did not finish; key_count will be recounted",
                           self.ns, self.previous_unfinished)
        return self.previous_unfinished

    def renew(self) -> None:
        """The fence: called before every write batch; raises ``LeaseLost`` once another token holds the lease."""
        try:
            self._renew(keys=[self._keys[0]], args=[self.token, self.ttl_ms])
        except ResponseError as exc:
            raise LeaseLost(f"publish lease on {self.ns} lost: {exc}") from exc

    def release(self, clean: bool) -> None:
        self._release(keys=list(self._keys), args=[self.token, "1" if clean else "0"])

    def __enter__(self) -> PublishLease:
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(clean=exc_type is None)
