"""Sample step: the day's query log -> quarantine + the generation set (``curated/query_sample/dt=D``).

Why the selection looks at a lake manifest and not at Redis: the KV publish step writes
``curated/kv_manifest/ns=<namespace>/`` (query_key, query_norm, last_dt) next to what it publishes, so
this job stays a pure lake job (re-runnable, testable, no network) and still knows what the namespace holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from qp_core.lake import KV_MANIFEST, QUARANTINE, QUERY_LOG, QUERY_SAMPLE, dataset, kv_manifest_dir, partition
from qp_core.nearline.settings import SamplingSettings
from qp_core.nearline.text import normalize_batches
from qp_core.ops.spark import path_exists, run_sql

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("query_norm", "query_key", "freq", "uv", "reason", "rank")
MANIFEST_SCHEMA = "query_key string, query_norm string, last_dt string"


@dataclass
class SampleReport:
    dt: str
    namespace: str
    rows: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    distinct_queries: int = 0
    selected: dict[str, int] = field(default_factory=dict)
    mode: str = "incremental"

    @property
    def selected_total(self) -> int:
        return sum(self.selected.values())


def normalized_log(spark: "SparkSession", df: "DataFrame", max_chars: int) -> "DataFrame":
    """Raw log rows + ``query_norm``, ``query_key``, ``malformed`` (None when usable), via mapInArrow."""
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType(
        [*df.schema.fields,
         StructField("query_norm", StringType()), StructField("query_key", StringType()),
         StructField("malformed", StringType())]
    )
    return df.mapInArrow(partial(normalize_batches, max_chars=max_chars), schema)


def namespace_holdings(spark: "SparkSession", namespace: str | None, dt: str) -> "DataFrame | None":
    """What the namespace held before ``dt`` (rows with ``last_dt < dt``), or None when it held nothing.

    "As of dt" makes a rerun of a date choose the same set as its first run: the first run's own publish
    stamped its queries with ``last_dt = dt``, and a later date's publish with a later one, so both are
    left out and the queries count as missing again, exactly as they did.
    """
    from pyspark.sql import functions as F

    if not namespace:
        return None
    path = kv_manifest_dir(namespace)
    if not path_exists(path):
        return None
    held = spark.read.parquet(str(path)).select("query_key", "query_norm", "last_dt").where(F.col("last_dt") < dt)
    return held if held.limit(1).count() else None


def other_namespace_served(spark: "SparkSession", namespace: str, dt: str) -> bool:
    """True when some other namespace's manifest holds results from before ``dt`` (a model served then)."""
    from pyspark.sql import functions as F

    root = dataset(KV_MANIFEST)
    if not path_exists(root):
        return False
    others = [p for p in root.glob("ns=*") if p.name != f"ns={namespace}" and path_exists(p)]
    if not others:
        return False
    df = spark.read.option("basePath", str(root)).parquet(*[str(p) for p in others])
    return bool(df.where(F.col("last_dt") < dt).limit(1).count())


def select_mode(
    spark: "SparkSession", held: "DataFrame | None", namespace: str, dt: str, previous_namespace: str | None
) -> str:
    """How the day's set is chosen.

    * ``incremental``: the target namespace held results before ``dt``: missing and stale queries;
    * ``version_change``: it held none, but another namespace was live (``--previous-namespace`` says so,
      or — on a rerun, when the pointer already names the target — another namespace's manifest holds
      results from before ``dt``): everything is regenerated;
    * ``cold_start``: nothing was ever published: everything, as ``missing``.
    """
    if held is not None:
        return "incremental"
    if previous_namespace and previous_namespace != namespace:
        return "version_change"
    if other_namespace_served(spark, namespace, dt):
        return "version_change"
    return "cold_start"


def build_sample(
    spark: "SparkSession",
    log: "DataFrame",
    dt: str,
    namespace: str,
    settings: SamplingSettings,
    previous_namespace: str | None = None,
) -> dict:
    """One day's raw log DataFrame -> {"normalized", "quarantine", "queries", "sample", "mode"}.

    Nothing is written; ``normalized`` is cached (the Python pass over the rows runs once) and the caller
    unpersists it.
    """
    from pyspark.sql import functions as F

    norm = normalized_log(spark, log, settings.max_query_chars).cache()
    raw_cols = [c for c in log.columns]
    quarantine = norm.where(F.col("malformed").isNotNull()).select(*raw_cols, F.col("malformed").alias("reason"))
    good = norm.where(F.col("malformed").isNull())
    queries = run_sql(spark, "sample_aggregate", rows=good)

    manifest = namespace_holdings(spark, namespace, dt)
    mode = select_mode(spark, manifest, namespace, dt, previous_namespace)
    if manifest is None:
        manifest = spark.createDataFrame([], MANIFEST_SCHEMA)
    sample = run_sql(
        spark, "sample_select", queries=queries, manifest=manifest,
        version_change=(mode == "version_change"), dt=dt, refresh_days=settings.refresh_days,
        budget=settings.daily_budget,
    )
    return {"normalized": norm, "quarantine": quarantine, "queries": queries,
            "sample": sample.select(*SAMPLE_COLUMNS), "mode": mode}


def run(
    spark: "SparkSession",
    dt: str,
    namespace: str,
    settings: SamplingSettings,
    previous_namespace: str | None = None,
) -> SampleReport:
    """Read ``raw/query_log/dt=D``, write ``curated/quarantine/dt=D`` and ``curated/query_sample/dt=D``."""
    from pyspark.sql import functions as F

    src = partition(QUERY_LOG, dt)
    if not path_exists(src):
        raise FileNotFoundError(f"no query-log partition {src}")
    log = spark.read.parquet(str(src))
    if "dt" in log.columns:
        log = log.drop("dt")
    built = build_sample(spark, log, dt, namespace, settings, previous_namespace)
    report = SampleReport(dt=dt, namespace=namespace, mode=built["mode"])
    try:
        # One pass counts rows and malformed reasons (and fills the cache the later steps read).
        counts = built["normalized"].groupBy("malformed").agg(F.count("*").alias("n")).collect()
        report.rows = sum(r["n"] for r in counts)
        report.quarantined = {r["malformed"]: r["n"] for r in counts if r["malformed"] is not None}
        # Quarantine: malformed rows are set aside with their reason, counted, never fatal, never silent.
        q_path = partition(QUARANTINE, dt)
        built["quarantine"].coalesce(1).write.mode("overwrite").parquet(str(q_path))
        report.distinct_queries = built["queries"].count()

        s_path = partition(QUERY_SAMPLE, dt)
        built["sample"].orderBy("rank").coalesce(1).write.mode("overwrite").parquet(str(s_path))
        counts = spark.read.parquet(str(s_path)).groupBy("reason").agg(F.count("*").alias("n")).collect()
        report.selected = {r["reason"]: r["n"] for r in counts}
    finally:
        built["normalized"].unpersist()
    logger.info(
        "sample dt=%s ns=%s mode=%s: %d rows, quarantined %d %s, %d distinct queries, selected %d %s",
        dt, namespace, report.mode, report.rows, sum(report.quarantined.values()), report.quarantined,
        report.distinct_queries, report.selected_total, report.selected,
    )
    return report
