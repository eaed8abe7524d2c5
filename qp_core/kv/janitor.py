"""Janitor: deletes retired namespaces after their deadline — resumable, idempotent, gentle on the server.

Why not a TTL on every key of a retired namespace: setting millions of TTLs is itself a long pass that a
kill interrupts (half the namespace immortal), a later revive must undo it key by key (a kill there
leaves TTLs on the *active* namespace), and millions of keys expiring in the same second is an
expiry storm. Instead retirement records a deadline (``retire_deadline`` in the metadata and the
``retiring`` sorted set, one Lua script) and this janitor, run by ``qp kv janitor`` and after every
daily publish, deletes each namespace whose deadline passed:

1. *claim* (Lua, control slot): only a namespace still ``retired`` (or already ``deleting``: a killed
   janitor's work is resumed), past its deadline, not the pointer's target and with no publish lease
   becomes ``deleting``. From then on activation, revive and publish leases refuse it.
2. *sweep*: ``SCAN MATCH qp:<ns>:*`` + ``UNLINK`` in batches of ``janitor_batch`` keys with a random pause
   of up to ``janitor_jitter_ms`` between batches; a kill anywhere just leaves fewer keys for the rerun.
3. *finalize* (Lua): after a sweep that found no key left, the metadata, registry entry, schedule
   entry and pointer-history entries go in one script (so no rollback can target a later, partial
   refill of the same namespace id). A namespace whose sweep ran out of ``budget_s`` stays ``deleting`` and is
   finished by the next run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field

from qp_core.kv import faults
from qp_core.kv.admin import KVAdmin, utc_now

logger = logging.getLogger(__name__)

# KEYS: active, meta, retiring, lease.  ARGV: ns, now_unix, now_iso
_CLAIM_LUA = """
if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then redis.call('ZREM', KEYS[3], ARGV[1]) return 'active' end
local st = redis.call('HGET', KEYS[2], 'status')
if not st then redis.call('ZREM', KEYS[3], ARGV[1]) return 'orphan' end
if st ~= 'retired' and st ~= 'deleting' then redis.call('ZREM', KEYS[3], ARGV[1]) return st end
if st == 'retired' then
  local deadline = tonumber(redis.call('HGET', KEYS[2], 'retire_deadline') or '0')
  if deadline > tonumber(ARGV[2]) then redis.call('ZADD', KEYS[3], deadline, ARGV[1]) return 'not_due' end
  if redis.call('EXISTS', KEYS[4]) == 1 then return 'leased' end
  redis.call('HSET', KEYS[2], 'status', 'deleting', 'deleting_since', ARGV[3])
  redis.call('ZADD', KEYS[3], 0, ARGV[1])  -- score 0: every later run resumes it, whatever its clock
end
return 'claimed'
"""

# KEYS: meta, retiring, namespaces, events, history.  ARGV: ns, event_json, history_max
_FINALIZE_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'deleting' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('LREM', KEYS[5], 0, ARGV[1])  -- never roll back to it (a later refill of the same id is partial)
redis.call('LPUSH', KEYS[4], ARGV[2])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1)
return 1
"""


@dataclass
class JanitorReport:
    deleted: list[str] = field(default_factory=list)      # namespaces finished in this run
    unlinked: int = 0                                     # keys removed in this run
    skipped: dict[str, str] = field(default_factory=dict)  # ns -> why not (leased, not_due, active...)
    unfinished: list[str] = field(default_factory=list)   # budget ran out: resumed by the next run

    def to_dict(self) -> dict:
        return asdict(self)


class Janitor:
    def __init__(self, admin: KVAdmin, *, batch: int | None = None, jitter_ms: float | None = None):
        s = admin.settings
        self.admin, self.r, self.keys = admin, admin.r, admin.keys
        self.batch = batch or s.janitor_batch
        self.jitter_s = (s.janitor_jitter_ms if jitter_ms is None else jitter_ms) / 1000.0
        self._claim = self.r.register_script(_CLAIM_LUA)
        self._finalize = self.r.register_script(_FINALIZE_LUA)

    def due(self, now: float | None = None) -> list[str]:
        """Namespaces whose deadline passed, and half-deleted ones (score 0 once claimed)."""
        return self.r.zrangebyscore(self.keys.retiring, "-inf", int(now if now is not None else time.time()))

    def run(self, *, budget_s: float | None = None, now: float | None = None) -> JanitorReport:
        report = JanitorReport()
        stop_at = time.monotonic() + (budget_s if budget_s is not None else self.admin.settings.janitor_budget_s)
        for ns in self.due(now):
            t = int(now if now is not None else time.time())
            faults.point("janitor.before_claim")
            state = self._claim(keys=[self.keys.active, self.keys.meta(ns), self.keys.retiring, self.keys.lease(ns)],
                                args=[ns, t, utc_now()])
            if state != "claimed":
                report.skipped[ns] = state
                logger.info("janitor: %s not deleted (%s)", ns, state)
                continue
            faults.point("janitor.after_claim")
            if self._sweep(ns, report, stop_at):
                event = json.dumps({"at": utc_now(), "action": "delete", "ns": ns})
                self._finalize(keys=[self.keys.meta(ns), self.keys.retiring, self.keys.namespaces, self.keys.events,
                                     self.keys.history],
                               args=[ns, event, self.admin.settings.history_max])
                report.deleted.append(ns)
                logger.info("janitor: deleted namespace %s", ns)
            else:
                report.unfinished.append(ns)
        return report

    def _sweep(self, ns: str, report: JanitorReport, stop_at: float) -> bool:
        """UNLINK every key of ``ns`` in batches; True once a full SCAN found none left."""
        while True:
            found = 0
            batch: list[str] = []
            for key in self.admin.scan_keys(ns):
                batch.append(key)
                if len(batch) >= self.batch:
                    found += self._unlink(batch, report)
                    batch = []
                    if time.monotonic() > stop_at:
                        return False
            found += self._unlink(batch, report)
            if found == 0:
                return True  # a clean pass: nothing was written behind the cursor
            if time.monotonic() > stop_at:
                return False

    def _unlink(self, batch: list[str], report: JanitorReport) -> int:
        if not batch:
            return 0
        pipe = self.r.pipeline(transaction=False)  # per-key UNLINK: the keys may sit in different cluster slots
        for key in batch:
            pipe.unlink(key)
        report.unlinked += sum(pipe.execute())
        faults.point("janitor.after_batch")
        if self.jitter_s > 0:
            time.sleep(random.uniform(0, self.jitter_s))
        return len(batch)
