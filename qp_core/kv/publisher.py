"""Writer: validated rows of ``curated/qp_results`` → one namespace, in pipelined batches.

Nothing unvalidated reaches readers: every row is re-checked here with
``qp_core.schema.validation_errors`` against its own normalised query (the upstream validator
may be another version, or a row may have been edited by hand), and its key is recomputed from
``query_norm`` so writer and reader always agree on the hash.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from qp_core.kv import faults
from qp_core.kv.admin import Activation, KVAdmin, utc_now
from qp_core.kv.layout import SOURCES, check_namespace, encode_value
from qp_core.kv.settings import KVSettings
from qp_core.normalize import normalize_query, query_key
from qp_core.schema import validation_errors

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
    published: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (query_key, query_norm)

    @property
    def keys_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("published")
        d["keys_per_s"] = round(self.keys_per_s, 1)
        return d


def check_row(row: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], str] | str:
    """(query_key, query_norm, result, src) for a publishable row, else the reason it is rejected."""
    qnorm = row.get("query_norm")
    if not isinstance(qnorm, str) or not qnorm:
        return "missing query_norm"
    if normalize_query(qnorm) != qnorm:
        return "query_norm not normalised"
    qkey = query_key(qnorm)
    if row.get("query_key") not in (None, "", qkey):
        return "query_key mismatch"
    src = row.get("src") or "model"
    if src not in SOURCES:
        return "bad src"
    raw = row.get("result_json")
    if not isinstance(raw, str) or not raw:
        return "missing result_json"
    try:
        result = json.loads(raw)
    except ValueError:
        return "result_json not JSON"
    if validation_errors(result, qnorm):
        return "result_json invalid"
    return qkey, qnorm, result, src


class KVPublisher:
    """``KVPublisher(url).publish(records, ns, dt)`` then ``.activate(ns, min_coverage)``."""

    def __init__(self, url: str | None = None, *, settings: KVSettings | None = None, redis=None):
        self.admin = KVAdmin(url, settings=settings, redis=redis)
        self.settings = self.admin.settings
        self.r = self.admin.r
        self.keys = self.admin.keys

    def publish(self, records: Iterable[Mapping[str, Any]], ns: str, dt: str,
                meta: Mapping[str, Any] | None = None, fence: Callable[[], None] | None = None) -> PublishReport:
        """Write every valid record under ``ns`` (add or refresh); reject and count the rest.

        Idempotent: the same records and ``dt`` write the same bytes, and ``key_count`` counts only keys
        that did not exist (SET ... GET tells us). No key gets a TTL (retirement is a deadline, see ``kv.admin``).
        ``fence`` (e.g. ``PublishLease.renew``) runs before every batch and before the metadata update; it
        raises to stop a publisher that lost its lease.
        """
        check_namespace(ns)
        start = time.perf_counter()
        report = PublishReport(namespace=ns, dt=str(dt))
        reasons: Counter[str] = Counter()
        versions: dict[str, str] = {}
        versions_from_model = False
        self.admin.register(ns)
        pipe = self.r.pipeline(transaction=False)
        pending = 0

        def flush() -> None:
            nonlocal pending
            if not pending:
                return
            if fence is not None:
                fence()
            faults.point("publish.batch")
            previous = pipe.execute()
            new = sum(1 for p in previous if p is None)
            report.new_keys += new
            report.refreshed += len(previous) - new
            pending = 0

        for row in records:
            report.rows += 1
            checked = check_row(row)
            if isinstance(checked, str):
                reasons[checked] += 1
                continue
            qkey, qnorm, result, src = checked
            if not versions_from_model and row.get("model_version"):  # prefer a model row's versions
                versions = {k: str(row[k]) for k in VERSION_FIELDS if row.get(k)}
                versions_from_model = src == "model"
            pipe.set(self.keys.result(ns, qkey), encode_value(result, qnorm, src, str(dt)), get=True)
            report.published.append((qkey, qnorm))
            report.written += 1
            pending += 1
            if pending >= self.settings.batch_size:
                flush()
        flush()
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
        logger.info("published %d keys (%d new) into %s in %.2fs (%.0f keys/s)", report.written, report.new_keys,
                    ns, report.seconds, report.keys_per_s)
        return report

    def activate(self, ns: str, min_coverage: float | None = None, *, force: bool = False) -> Activation:
        return self.admin.activate(ns, min_coverage, force=force)

    def rollback(self) -> Activation:
        return self.admin.rollback()
