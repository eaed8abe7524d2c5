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
from qp_core.nearline import querylog
from qp_core.nearline.settings import SamplingSettings
from qp_core.nearline.text import key_batches, normalize_batches
from qp_core.ops.spark import global_rank, path_exists, run_sql

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


def normalized_log(df: "DataFrame", max_chars: int, well_formed: bool = False) -> "DataFrame":
    """Log rows -> their other columns + ``query_norm``, ``malformed`` (None when usable; ``null`` for a
    null query) and ``bad_query`` (the raw string of a malformed row); with ``well_formed=True``, only the
    usable rows, as their other columns + ``query_norm``.

    Python only where it must be. A string whose normalisation is ASCII lowering (ASCII letters, digits and
    CJK ideographs in single-space-separated runs, within the length limit: ``text.LOWER_IS_NORMAL_JAVA``) is
    well formed and gets its ``query_norm`` in the JVM (a regex and ``translate``). The other rows take one
    ``mapInArrow`` pass (``text.normalize_batches``) in which Python runs once per distinct string of a
    batch. Why not normalise the day's distinct strings and join them back to the rows: at 10^6-10^7 rows
    that join shuffled and sorted every row of the day (too many distinct strings to broadcast). Select only
    the columns the caller needs before calling: every column of a slow row makes the trip to Python and back.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    from qp_core.nearline.text import ASCII_LOWER, ASCII_UPPER, LOWER_IS_NORMAL_JAVA

    q = F.col("query")
    fast_path = F.coalesce(q.rlike(LOWER_IS_NORMAL_JAVA) & (F.char_length(q) <= max_chars), F.lit(False))
    others = [f for f in df.schema.fields if f.name != "query"]
    added = [StructField("query_norm", StringType())]
    if not well_formed:
        added += [StructField("malformed", StringType()), StructField("bad_query", StringType())]
    fast = df.where(fast_path).select(
        *[f.name for f in others],
        F.when(q.rlike("[A-Z]"), F.translate(q, ASCII_UPPER, ASCII_LOWER)).otherwise(q).alias("query_norm"),
        *[F.lit(None).cast("string").alias(f.name) for f in added[1:]],
    )
    slow = df.where(~fast_path).mapInArrow(
        partial(normalize_batches, max_chars=max_chars, well_formed=well_formed), StructType(others + added))
    return fast.unionByName(slow)


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
    """One day's raw log DataFrame -> {"groups", "quarantine", "queries", "sample", "mode", "cached"}.

    Nothing is written. The day is read and normalised once, into ``groups`` (cached): one row per
    normalised query (``query_key``, ``query_norm``, ``freq`` rows, ``uv`` distinct users) plus one row per
    distinct malformed raw string (``malformed`` = the reason, ``bad_query`` = the string). That is a
    single aggregation with one shuffle, like a plain count-distinct group-by; the row count, the
    quarantine counts, the set of malformed strings and the day's queries all come from it. The quarantine
    then re-reads the log's files and keeps the rows whose string is malformed (a broadcast of those few
    strings; the null query is one of them, matched null-safe). The ranking's sorted frame
    (``global_rank``) is cached too; all are listed in ``cached`` for the caller to unpersist.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    rows = normalized_log(log.select("user_id", "query"), settings.max_query_chars)
    counted = run_sql(spark, "sample_aggregate", rows=rows)
    groups = counted.mapInArrow(key_batches, StructType([*counted.schema.fields, StructField("query_key", StringType())]))
    groups = groups.cache()
    cached = [groups]
    bad = groups.where(F.col("malformed").isNotNull()).select(
        F.col("bad_query").alias("_qp_bad_query"), F.col("malformed").alias("reason"))
    quarantine = log.join(F.broadcast(bad), log["query"].eqNullSafe(bad["_qp_bad_query"])).select(
        *[log[c] for c in log.columns], "reason")
    queries = groups.where(F.col("malformed").isNull()).select("query_key", "query_norm", "freq", "uv")

    manifest = namespace_holdings(spark, namespace, dt)
    mode = select_mode(spark, manifest, namespace, dt, previous_namespace)
    if manifest is None:
        manifest = spark.createDataFrame([], MANIFEST_SCHEMA)
    candidates = run_sql(
        spark, "sample_select", queries=queries, manifest=manifest,
        version_change=(mode == "version_change"), dt=dt, refresh_days=settings.refresh_days,
    )
    # Highest frequency first, then UV, then key (ties are deterministic); at most the daily budget.
    order = [F.col("freq").desc(), F.col("uv").desc(), F.col("query_key")]
    sample = global_rank(candidates, order, "rank", cached).where(F.col("rank") <= settings.daily_budget)
    sample = sample.withColumn("rank", F.col("rank").cast("int"))
    return {"groups": groups, "quarantine": quarantine, "queries": queries,
            "sample": sample.select(*SAMPLE_COLUMNS), "mode": mode, "cached": cached}


def run(
    spark: "SparkSession",
    dt: str,
    namespace: str,
    settings: SamplingSettings,
    previous_namespace: str | None = None,
) -> SampleReport:
    """Read ``raw/query_log/dt=D``, write ``curated/quarantine/dt=D`` and ``curated/query_sample/dt=D``.

    A partition that breaks the log's schema contract raises ``querylog.LogSchemaError`` before anything is
    written; a malformed row (including undecodable bytes) is quarantined with its reason.
    """
    from pyspark.sql import functions as F

    log, _ = querylog.read(spark, [dt], querylog.SAMPLE_NEEDS)  # schema contract checked before any write
    if log is None:
        raise FileNotFoundError(f"no query-log partition {partition(QUERY_LOG, dt)}")
    built = build_sample(spark, log, dt, namespace, settings, previous_namespace)
    report = SampleReport(dt=dt, namespace=namespace, mode=built["mode"])
    try:
        # Rows and malformed reasons from the day's groups (this fills their cache, which the quarantine's
        # strings and the selection read).
        counts = built["groups"].groupBy("malformed").agg(F.sum("freq").alias("n")).collect()
        report.rows = sum(r["n"] for r in counts)
        report.quarantined = {r["malformed"]: r["n"] for r in counts if r["malformed"] is not None}
        # Quarantine: malformed rows are set aside with their reason, counted, never fatal, never silent.
        # repartition(1), not coalesce(1): one file, while the scan of the day stays parallel (coalesce
        # would pull the scan and the join into one task).
        q_path = partition(QUARANTINE, dt)
        built["quarantine"].repartition(1).write.mode("overwrite").parquet(str(q_path))
        report.distinct_queries = built["queries"].count()

        s_path = partition(QUERY_SAMPLE, dt)
        # No coalesce(1): adaptive execution sizes the files (one for a small day, several for a big one).
        built["sample"].orderBy("rank").write.mode("overwrite").parquet(str(s_path))
        counts = spark.read.parquet(str(s_path)).groupBy("reason").agg(F.count("*").alias("n")).collect()
        report.selected = {r["reason"]: r["n"] for r in counts}
    finally:
        for frame in built["cached"]:
            frame.unpersist()
    logger.info(
        "sample dt=%s ns=%s mode=%s: %d rows, quarantined %d %s, %d distinct queries, selected %d %s",
        dt, namespace, report.mode, report.rows, sum(report.quarantined.values()), report.quarantined,
        report.distinct_queries, report.selected_total, report.selected,
    )
    return report
