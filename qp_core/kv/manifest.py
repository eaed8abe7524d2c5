"""Lake mirror of what a namespace holds: ``curated/kv_manifest/ns=<ns>/`` (query_key, query_norm, last_dt).

The one reader and writer of that manifest in plain Python (the Spark sample job reads it as a DataFrame,
``qp_core.nearline.sample.namespace_holdings``).

Why: the Spark sample job must know which queries the active namespace already answers and how
old each answer is (to pick missing/stale queries) without scanning Redis. The manifest is
rewritten whole for the namespace on every publish (merge old + new, write to a temp dir, swap),
so reruns are idempotent and a crash leaves the previous manifest in place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from qp_core.lake import kv_manifest_dir

COLUMNS = ("query_key", "query_norm", "last_dt")


def manifest_dir(ns: str) -> Path:
    """``curated/kv_manifest/ns=<ns>`` (named in :mod:`qp_core.lake`)."""
    return kv_manifest_dir(ns)


def read_manifest(ns: str) -> dict[str, tuple[str, str]]:
    """query_key -> (query_norm, last_dt) for ``ns``; empty if none was written."""
    import pyarrow.parquet as pq

    path = manifest_dir(ns)
    if not path.exists():
        return {}
    table = pq.read_table(path, columns=list(COLUMNS))
    cols = table.to_pydict()
    return {k: (q, d) for k, q, d in zip(cols["query_key"], cols["query_norm"], cols["last_dt"])}


def update_manifest(ns: str, published: Iterable[tuple[str, str]], dt: str) -> int:
    """Merge ``published`` (query_key, query_norm) at ``dt`` into the ns manifest; returns its row count.

    ``last_dt`` mirrors the KV: the date whose answer is stored now (a rerun of an older date
    rewrites those keys, so their last_dt goes back too).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    published = list(published)
    final = manifest_dir(ns)
    if not published and not final.exists():
        return 0  # no empty manifest: to the sample job "no manifest" means "namespace never filled"
    rows = read_manifest(ns)
    for qkey, qnorm in published:
        rows[qkey] = (qnorm, str(dt))
    keys = sorted(rows)
    table = pa.table(
        {
            "query_key": pa.array(keys, pa.string()),
            "query_norm": pa.array([rows[k][0] for k in keys], pa.string()),
            "last_dt": pa.array([rows[k][1] for k in keys], pa.string()),
        }
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-ns={ns}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    pq.write_table(table, tmp / "part-00000.parquet")
    old = final.parent / f".old-ns={ns}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return len(keys)
