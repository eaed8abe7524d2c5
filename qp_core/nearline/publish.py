"""The daily publish step: ``curated/qp_results/dt=D`` → namespace → lake manifest → pointer (gate and pin permitting).

Kept here (not in ``jobs/publish.py``) so the DAG, ``qp run`` and tests run the same code. The
namespace defaults to ``namespace_for`` of the rows' versions; the pipeline passes it explicitly.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from qp_core.kv import faults
from qp_core.kv.admin import KVAdmin, KVError
from qp_core.kv.janitor import Janitor
from qp_core.kv.layout import namespace_for
from qp_core.kv.lease import PublishLease
from qp_core.kv.manifest import reconcile_manifest, update_manifest
from qp_core.kv.publisher import KVPublisher, PublishReport
from qp_core.kv.rows import partition_prevalidated
from qp_core.kv.settings import KVSettings, load_kv_settings
from qp_core.lake import RESULTS, partition, quality_path, read_quality

logger = logging.getLogger(__name__)

READ_COLUMNS = ("query_key", "query_norm", "result_json", "src", "model_version", "rules_version", "prompt_version")


class PublishRefused(RuntimeError):
    """The partition must not be published (missing, or its quality gate failed)."""


@dataclass
class DailyPublishResult:
    report: PublishReport
    manifest_rows: int
    activation: dict[str, Any] | None
    active_after: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"publish": self.report.to_dict(), "manifest_rows": self.manifest_rows,
                "activation": self.activation, "active_after": self.active_after, **self.extra}


def read_results(dt: str) -> list[dict[str, Any]]:
    """Rows of ``curated/qp_results/dt=D`` (files starting with ``_`` or ``.``, e.g. ``_quality.json``, skipped)."""
    import pyarrow.dataset as ds

    part = partition(RESULTS, dt)
    if not part.exists():
        raise PublishRefused(f"no results partition {part}")
    dataset = ds.dataset(str(part), format="parquet")
    cols = [c for c in READ_COLUMNS if c in dataset.schema.names]
    return dataset.to_table(columns=cols).to_pylist()


def check_quality(dt: str) -> dict[str, Any] | None:
    """The partition's ``_quality.json`` (if any); refuses a partition whose gate is recorded as failed."""
    report = read_quality(dt)
    if report is None:
        return None
    gate = report.get("passed", report.get("gate_passed", report.get("gate", {}).get("passed")
                                           if isinstance(report.get("gate"), dict) else None))
    if gate is False:
        raise PublishRefused(f"quality gate failed for dt={dt} ({quality_path(dt)}); nothing published")
    return report


def default_namespace(rows: list[dict[str, Any]]) -> str:
    """``namespace_for`` the most common (model, rules, prompt) versions among model-sourced rows."""
    pool = [r for r in rows if r.get("src") == "model"] or rows
    triples = Counter((r.get("model_version"), r.get("rules_version"), r.get("prompt_version")) for r in pool)
    (model, rules, prompt), _ = triples.most_common(1)[0] if triples else ((None, None, None), 0)
    if not (model and rules and prompt):
        raise PublishRefused("rows carry no model/rules/prompt versions: pass --namespace")
    return namespace_for(model, rules, prompt)


def production_version() -> str | None:
    """The registry's production model version now (None when there is no registry/model here)."""
    try:
        from qp_core import registry

        record = registry.production()
        return str(record.version) if record is not None else None
    except Exception as exc:  # noqa: BLE001 - the pin check must not fail a publish on a registry hiccup
        logger.warning("could not read the registry's production model: %s", exc)
        return None


def pin_decision(admin: KVAdmin, ns: str) -> tuple[bool, str]:
    """(may auto-activate ``ns``, why). A pin on another namespace blocks the daily flip until an operator
    unpins or the registry's production model differs from the one recorded at pin time (a new
    promotion, or a registry rollback: the registry now says what should serve), which lifts the pin."""
    raw = admin.r.get(admin.keys.pin)
    pin = json.loads(raw) if raw else None
    if not pin or pin.get("ns") == ns:
        return True, ""
    now = production_version()
    then = pin.get("registry_version")
    if now and then and now != then:
        faults.point("daily.before_unpin")
        try:  # only the pin read above: an operator's newer pin is never lifted by this run
            admin.unpin(reason=f"registry production changed since the pin ({then} -> {now})", expected_raw=raw)
        except KVError as exc:
            return False, f"pin changed while this run checked it ({exc}); pointer left alone"
        logger.info("pin on %s lifted: registry production changed %s -> %s", pin["ns"], then, now)
        return True, f"pin lifted: production model changed {then} -> {now}"
    why = (f"pointer pinned to {pin['ns']} by {pin.get('by')} at {pin.get('at')}"
           f"{' (' + pin['reason'] + ')' if pin.get('reason') else ''}; production model still {now}: "
           f"{ns} is published but not activated (`qp kv unpin` or promote a new model)")
    logger.warning(why)
    return False, why


def publish_day(
    dt: str,
    namespace: str | None = None,
    *,
    url: str | None = None,
    activate: bool | None = None,
    min_coverage: float | None = None,
    settings: KVSettings | None = None,
    janitor: bool = True,
) -> DailyPublishResult:
    """Publish one partition under the namespace's publish lease, then (gate and pin permitting) activate.

    Under the lease: the keys (fenced per batch), ``key_count`` recounted when the previous publish into
    the namespace never finished (crash), and the lake manifest (fenced before its atomic replace).
    Then the pointer, then the janitor (its failures are logged, never fail the publish).
    """
    settings = settings or load_kv_settings()
    quality = check_quality(dt)
    rows = read_results(dt)
    ns = namespace or (default_namespace(rows) if rows else None)
    if ns is None:
        raise PublishRefused(f"dt={dt} has no rows and no --namespace was given")
    publisher = KVPublisher(url, settings=settings)
    admin = publisher.admin
    extra: dict[str, Any] = {"quality_present": quality is not None}
    # rows the validate step checked and nobody touched since are not checked a second time
    prevalidated = partition_prevalidated(partition(RESULTS, dt), quality)
    extra["prevalidated"] = prevalidated
    with PublishLease(admin, ns) as lease:
        report = publisher.publish(rows, ns, dt, fence=lease.renew, prevalidated=prevalidated)
        if lease.previous_unfinished:
            extra["key_count_recounted"] = admin.recount(ns)
        faults.point("daily.before_manifest")
        manifest_rows = update_manifest(ns, report.published, dt, before_replace=lease.renew)
    activation = None
    do_activate = settings.activate_after_publish if activate is None else activate
    if do_activate and admin.active() != ns:
        allowed, why = pin_decision(admin, ns)
        if allowed:
            activation = publisher.activate(ns, min_coverage).to_dict()
        else:
            activation = {"activated": False, "namespace": ns, "previous": admin.active(), "reason": why}
        if why:
            extra["pin"] = why
    if janitor:
        try:
            extra["janitor"] = Janitor(admin).run().to_dict()
        except Exception as exc:  # noqa: BLE001 - housekeeping; `qp kv janitor` reruns it
            logger.warning("janitor failed (rerun `qp kv janitor`): %s", exc)
    active = admin.active()
    logger.info("dt=%s ns=%s: %d keys written (%d new, %d rejected) at %.0f keys/s; manifest %d rows; active=%s",
                dt, ns, report.written, report.new_keys, report.rejected, report.keys_per_s, manifest_rows, active)
    return DailyPublishResult(report, manifest_rows, activation, active, extra=extra)


def reconcile_target(ns: str, url: str | None = None, settings: KVSettings | None = None) -> dict[str, int]:
    """Before the day's sample: drop manifest entries of ``ns`` that Redis no longer holds (see ``kv.manifest``)."""
    admin = KVAdmin(url, settings=settings)
    return reconcile_manifest(ns, admin.r, admin.keys, batch=admin.settings.batch_size)
