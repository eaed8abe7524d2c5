"""Auxiliary pseudo-labelled data (paper eq. 8, D_aux^k): the legacy pipeline's answers on the query pool.

Spark, because production pools are 10^7 queries: the pool is ``raw/query_log`` over ``lookback_days``
before the run date, normalised and deduplicated, golden queries removed (the golden set must stay
unseen), then a seeded random sample of ``ceil(size / n_tasks)`` queries. ``mapInArrow`` runs the legacy
pipeline once per query and emits one single-task row per sub-task (short task prompt → the sub-task's
fields in the unified format), written partitioned by ``task`` to ``training/aux`` (whole dataset
overwritten: it is rebuilt each chain run, like the paper's periodic rebuild).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import date, timedelta
from typing import Iterator

from qp_core import paths
from qp_core.lake import AUX, GOLDEN, QUERY_LOG, dataset

logger = logging.getLogger(__name__)

AUX_COLUMNS = ("task", "query", "prompt", "completion")


def _legacy_rows(batches: Iterator, tasks: list[str], legacy_dir: str) -> Iterator:
    """mapInArrow body: (query) batches → (task, query, prompt, completion) batches.

    The legacy model is loaded from the directory the driver fitted it into: executors may run with
    another environment (QP_HOME) than the driver, so nothing here resolves paths on its own.
    """
    import pyarrow as pa

    from qp_core.legacy import LegacyPipeline
    from qp_core.prompt import build_task_messages, task_target

    legacy = LegacyPipeline.load(legacy_dir)
    for batch in batches:
        out = {k: [] for k in AUX_COLUMNS}
        queries = batch.column("query").to_pylist()
        for query, unified in zip(queries, legacy.predict_batch(queries)):
            if unified is None:
                continue
            for task in tasks:
                out["task"].append(task)
                out["query"].append(query)
                out["prompt"].append(json.dumps(build_task_messages(task, query), ensure_ascii=False))
                out["completion"].append(task_target(task, unified))
        yield pa.RecordBatch.from_pydict(out, schema=pa.schema([(k, pa.string()) for k in AUX_COLUMNS]))


def build_aux(spark, run_dt: str, *, size: int, lookback_days: int, tasks: list[str], seed: int = 0,
              min_freq: int = 1) -> dict[str, int]:
    """Write ``training/aux/task=<t>``; returns rows per task."""
    from pyspark.sql import functions as F

    from qp_core.legacy import load_or_train
    from qp_core.nearline import querylog
    from qp_core.normalize import normalize_query

    end = date.fromisoformat(run_dt)
    start = (end - timedelta(days=lookback_days)).isoformat()
    window = [(end - timedelta(days=i)).isoformat() for i in range(lookback_days, -1, -1)]
    # the nearline steps' log reader, before anything costly: a drifted schema stops the stage naming
    # partition and column
    logs, _ = querylog.read(spark, window, needs=("query",))
    if logs is None:
        raise FileNotFoundError(f"{dataset(QUERY_LOG)}: no partition in {start}..{run_dt} to pool aux queries from")
    legacy = load_or_train()  # fit (or load) once in the driver; executors load the saved copy
    legacy_dir = paths.registry_root() / "legacy" / str(legacy.meta.get("training_hash", "-"))
    if not legacy_dir.exists():
        legacy_dir = paths.qp_home() / "training" / "legacy"
        legacy.save(legacy_dir)
    legacy_dir = str(legacy_dir)

    norm = F.udf(lambda q: normalize_query(q) if q else None, "string")
    pool = (  # Python normalises each distinct raw string once, not each row
        logs.where(F.col("query").isNotNull())
        .groupBy("query").agg(F.count(F.lit(1)).alias("freq"))
        .select(norm("query").alias("query"), "freq")
        .where(F.length("query") > 0)
        .groupBy("query").agg(F.sum("freq").alias("freq"))
        .where(F.col("freq") >= min_freq)
    )
    golden_path = dataset(GOLDEN)
    if golden_path.exists():
        golden = spark.read.parquet(str(golden_path)).select(norm("query").alias("query")).distinct()
        pool = pool.join(golden, "query", "left_anti")
    n_queries = max(1, math.ceil(size / max(1, len(tasks))))
    sample = pool.orderBy(F.rand(seed)).limit(n_queries).select("query").repartition(max(1, spark.sparkContext.defaultParallelism))
    schema = "task string, query string, prompt string, completion string"
    aux = sample.mapInArrow(lambda it: _legacy_rows(it, list(tasks), legacy_dir), schema)
    out = dataset(AUX)
    aux.write.mode("overwrite").partitionBy("task").parquet(str(out))
    counts = {r["task"]: r["count"] for r in spark.read.parquet(str(out)).groupBy("task").count().collect()}
    logger.info("aux data: %s rows per task from %d pooled queries (%s..%s) -> %s", counts, n_queries, start, run_dt, out)
    return {str(k): int(v) for k, v in counts.items()}
