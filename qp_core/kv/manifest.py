"""Lake mirror of what a namespace holds: ``curated/kv_manifest/ns=<ns>/part-00000.parquet`` (query_key, query_norm, last_dt).

The one reader and writer of that manifest in plain Python (the Spark sample job reads it as a DataFrame,
``qp_core.nearline.sample.namespace_holdings``).

Why: the Spark sample job must know which queries the target namespace already answers and how old
each answer is (to pick missing/stale queries) without scanning Redis.

Crash safety: the manifest is rewritten whole on every publish (merge old + new), into a hidden temp
file in the same directory (``.part-00000.parquet.<random>``: Spark and pyarrow skip names starting
with ``.``), fsynced, then ``os.replace``d over the one data file and the directory fsynced. A single
atomic rename: at every instant the directory holds either the old or the new complete manifest,
so a kill -9 never loses history. Leftover temp files of a killed writer are removed by the next one.

Agreement with Redis: :func:`reconcile_manifest` drops every entry whose key the namespace no longer
holds (a failover that lost writes, a flush, a janitor deletion), so the next sample selects those
queries again instead of believing them served for ``refresh_days``. The pipeline runs it in
``resolve_target``, before the day's sample; ``qp kv reconcile NS`` runs it by hand.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from qp_core.kv import faults
from qp_core.lake import kv_manifest_dir

logger = logging.getLogger(__name__)

COLUMNS = ("query_key", "query_norm", "last_dt")
DATA_FILE = "part-00000.parquet"


def manifest_dir(ns: str) -> Path:
    """``curated/kv_manifest/ns=<ns>`` (named in :mod:`qp_core.lake`)."""
    return kv_manifest_dir(ns)


def read_manifest(ns: str) -> dict[str, tuple[str, str]]:
    """query_key -> (query_norm, last_dt) for ``ns``; empty if none was written."""
    import pyarrow.parquet as pq

    path = manifest_dir(ns)
    if not path.exists() or not any(p.suffix == ".parquet" and not p.name.startswith((".", "_"))
                                    for p in path.iterdir()):
        return {}
    table = pq.read_table(path, columns=list(COLUMNS))
    cols = table.to_pydict()
    return {k: (q, d) for k, q, d in zip(cols["query_key"], cols["query_norm"], cols["last_dt"])}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(ns: str, rows: dict[str, tuple[str, str]], before_replace: Callable[[], None] | None = None) -> int:
    """Replace the manifest of ``ns`` by ``rows`` atomically (temp file + fsync + ``os.replace``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = manifest_dir(ns)
    final.mkdir(parents=True, exist_ok=True)
    for stale in final.glob(f".{DATA_FILE}.*"):  # a killed writer's temp file
        stale.unlink(missing_ok=True)
    keys = sorted(rows)
    table = pa.table({
        "query_key": pa.array(keys, pa.string()),
        "query_norm": pa.array([rows[k][0] for k in keys], pa.string()),
        "last_dt": pa.array([rows[k][1] for k in keys], pa.string()),
    })
    tmp = final / f".{DATA_FILE}.{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if before_replace is not None:
        before_replace()  # the publish lease's fence: a publisher that lost its lease must not overwrite
    faults.point("manifest.before_replace")
    os.replace(tmp, final / DATA_FILE)
    _fsync_dir(final)
    return len(keys)


def update_manifest(ns: str, published: Iterable[tuple[str, str]], dt: str,
                    before_replace: Callable[[], None] | None = None) -> int:
    """Merge ``published`` (query_key, query_norm) at ``dt`` into the ns manifest; returns its row count.

    ``last_dt`` mirrors the KV: the date whose answer is stored now (a rerun of an older date
    rewrites those keys, so their last_dt goes back too).
    """
    published = list(published)
    if not published and not manifest_dir(ns).exists():
        return 0  # no empty manifest: to the sample job "no manifest" means "namespace never filled"
    rows = read_manifest(ns)
    for qkey, qnorm in published:
        rows[qkey] = (qnorm, str(dt))
    return write_manifest(ns, rows, before_replace)


def reconcile_manifest(ns: str, redis, keys, batch: int = 1000) -> dict[str, int]:
    """Drop manifest entries whose result key ``ns`` does not hold in Redis; returns kept/dropped counts.

    One ``EXISTS`` per key, pipelined ``batch`` at a time (per key, so it also works across cluster slots).
    The manifest is rewritten (atomically) only when something was dropped.
    """
    rows = read_manifest(ns)
    if not rows:
        return {"kept": 0, "dropped": 0}
    qkeys = list(rows)
    missing: list[str] = []
    for i in range(0, len(qkeys), batch):
        chunk = qkeys[i:i + batch]
        pipe = redis.pipeline(transaction=False)
        for qk in chunk:
            pipe.exists(keys.result(ns, qk))
        missing.extend(qk for qk, hit in zip(chunk, pipe.execute()) if not hit)
    for qk in missing:
        del rows[qk]
    if missing:
        write_manifest(ns, rows)
        logger.warning("manifest of %s: %d of %d entries missing in Redis, dropped (they will be selected again)",
                       ns, len(missing), len(qkeys))
    return {"kept": len(rows), "dropped": len(missing)}
