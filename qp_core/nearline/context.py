"""Context step: rewrite history + candidate notes for the day's sample (``curated/query_context/dt=D``).

The paper's prompt is I ⊕ R ⊕ q ⊕ C: C is the user's rewrite history (what people typed right before this
query in the same session) and notes retrieved for the query. Both are computed in Spark over the whole
day's generation set at once; BM25 needs no search server: the pool's postings are broadcast to the
workers as an in-memory index (``nearline.bm25``), or joined in Spark SQL when the pool is too big
(``sql/context_bm25.sql``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import TYPE_CHECKING

from qp_core.lake import NOTES, QUERY_CONTEXT, QUERY_SAMPLE, dataset, partition
from qp_core.nearline import bm25, querylog
from qp_core.nearline.sample import normalized_log
from qp_core.nearline.settings import SamplingSettings
from qp_core.nearline.text import render_note_batches, tokenize_batches
from qp_core.ops.spark import global_rank, path_exists, run_sql

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

CONTEXT_COLUMNS = ("query_norm", "query_key", "history", "notes")


@dataclass
class ContextReport:
    dt: str
    queries: int = 0
    log_rows: int = 0
    log_days: int = 0
    with_history: int = 0
    with_notes: int = 0
    notes_pool: int = 0


def lookback_dates(dt: str, days: int) -> list[str]:
    """The partition date and the ``days - 1`` before it, oldest first."""
    end = date.fromisoformat(dt)
    return [(end - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def read_log_window(spark: "SparkSession", dt: str, days: int) -> tuple["DataFrame | None", int]:
    """Raw log rows of the lookback window (missing days are skipped: early dates have less history).

    Each partition's schema is checked first (``querylog.LogSchemaError`` names the one that breaks it).
    """
    df, found = querylog.read(spark, lookback_dates(dt, days), querylog.CONTEXT_NEEDS)
    return df, len(found)


def history(spark: "SparkSession", log: "DataFrame", targets: "DataFrame", settings: SamplingSettings) -> "DataFrame":
    """query_key -> history (list of normalised queries), for targets that have any."""
    rows = normalized_log(log.select("session_id", "event_time", "query"), settings.max_query_chars,
                          well_formed=True)
    return run_sql(spark, "context_history", rows=rows, targets=targets.select("query_key", "query_norm"),
                   k=settings.history_k)


def candidate_notes(
    spark: "SparkSession", notes: "DataFrame", targets: "DataFrame", settings: SamplingSettings,
    cached: list | None = None,
) -> "DataFrame":
    """Every target (query_norm, query_key) with ``notes``: the rendered text of its top m notes by BM25,
    best first (empty or null when none scores above ``bm25_min_score``).

    How the work is kept to what BM25 needs, and done once:

    * Python runs once per note (tokenise, render) and once per target query (tokenise) — never per
      (query, note) pair;
    * the pool's postings carry their BM25 term weight (``sql/context_bm25_postings.sql``), so scoring a
      query only sums weights per (query, note);
    * a pool of at most ``bm25_broadcast_max_postings`` postings is broadcast as an in-memory index with
      its rendered texts, and each batch of queries is scored, cut to the top m and given its notes' texts
      in numpy (``nearline.bm25``): neither the candidate nor the chosen (query, note) pairs become rows
      to join and regroup. A bigger pool is joined by term in Spark SQL (``sql/context_bm25.sql``), same
      scores and ties, and only the chosen notes are rendered;
    * notes get integer ids (``nid``, the rank of ``note_id``, so score ties break exactly as on
      ``note_id``); on the SQL path queries do too (``qid``);
    * every frame read more than once (the pool's terms; on the SQL path the query ids, the top m) is cached and
      materialised by one action before the next plan reads it. Without that, adaptive execution runs the
      consumers' query stages concurrently and each recomputed the BM25 join from scratch (measured: the
      2.3M-row join and its spill, twice, on a 10^5-row bench day).

    Cached frames are appended to ``cached`` for the caller to unpersist once the result is written.
    """
    from pyspark.sql import functions as F

    def terms_schema(id_col: str) -> str:  # tokenize_batches' output
        return f"{id_col} long, term string, tf long, dl long"

    own: list = []
    ids = global_rank(notes.select("note_id").distinct(), ["note_id"], "nid", own)
    pool = notes.select("note_id", "title", "body", "tags").join(ids, "note_id")
    note_terms = pool.select("nid", "title", "body", "tags").mapInArrow(
        partial(tokenize_batches, id_col="nid", text_cols=("title", "body", "tags"),
                cjk_unigrams=settings.bm25_cjk_unigrams), terms_schema("nid")
    ).cache()
    own.append(note_terms)
    n_postings = note_terms.count()  # tokenises the pool once; the postings query reads it three times
    postings = run_sql(
        spark, "context_bm25_postings", note_terms=note_terms,
        k1=settings.bm25_k1, b=settings.bm25_b, max_df_ratio=settings.bm25_max_df_ratio,
        df_cut_min_docs=settings.bm25_df_cut_min_docs,
    )

    render = partial(render_note_batches, id_col="nid")
    if n_postings <= settings.bm25_broadcast_max_postings:
        # The pool fits in memory: its index and rendered texts are broadcast, and each batch of queries is
        # scored and given its notes' texts in numpy (bm25.py).
        index = spark.sparkContext.broadcast(bm25.PostingsIndex.from_arrow(postings.toArrow()))
        texts = spark.sparkContext.broadcast(bm25.texts_by_nid(
            pool.select("nid", "title", "body", "tags").mapInArrow(render, "nid long, note_text string").toArrow()))
        if cached is not None:
            cached += [*own, index, texts]  # unpersisted with the cached frames
        return targets.select("query_norm", "query_key").mapInArrow(
            partial(bm25.notes_batches, index=index, texts=texts, top_m=settings.notes_top_m,
                    min_score=settings.bm25_min_score, cjk_unigrams=settings.bm25_cjk_unigrams),
            bm25.NOTES_SCHEMA,
        )

    tq = targets.select("query_key", "query_norm").withColumn("qid", F.monotonically_increasing_id()).cache()
    own.append(tq)
    tq.count()  # fixes each query's qid (the tokens and the key map below must see the same ids)
    query_terms = tq.select("qid", "query_norm").mapInArrow(
        partial(tokenize_batches, id_col="qid", text_cols=("query_norm",),
                cjk_unigrams=settings.bm25_cjk_unigrams), terms_schema("qid")
    ).select("qid", "term")
    top = run_sql(
        spark, "context_bm25", postings=postings, query_terms=query_terms,
        min_score=settings.bm25_min_score, top_m=settings.notes_top_m,
    ).cache()
    own.append(top)
    top.count()  # BM25 runs once; the render and the final join read the cache
    if cached is not None:
        cached += own
    # Render each chosen note once (not once per query that picked it).
    chosen = pool.join(top.select("nid").distinct(), "nid").select("nid", "title", "body", "tags")
    rendered = chosen.mapInArrow(render, "nid long, note_text string")
    ranked = (
        top.join(rendered, "nid")
        .join(tq.select("qid", "query_key"), "qid")
        .groupBy("query_key")
        .agg(F.array_sort(F.collect_list(F.struct("note_rank", "note_text"))).alias("ranked"))
        .select("query_key", F.transform("ranked", lambda x: x["note_text"]).alias("notes"))
    )
    return targets.select("query_norm", "query_key").join(ranked, "query_key", "left")


def build_context(
    spark: "SparkSession",
    targets: "DataFrame",
    log: "DataFrame | None",
    notes: "DataFrame | None",
    settings: SamplingSettings,
    cached: list | None = None,
) -> "DataFrame":
    """targets (query_norm, query_key) -> (query_norm, query_key, history, notes); every target gets a row."""
    from pyspark.sql import functions as F

    # Notes first: the in-memory scorer passes the targets through with their notes (no join). And on the
    # SQL path, joined to the right of the history, the notes plan was rewritten by the analyser (shared
    # relations are re-instanced) and no longer matched its cached top m, so the write recomputed the BM25
    # join — twice, measured on the 10^5-row bench day. On the left it is kept as is.
    if notes is not None and settings.notes_top_m > 0:
        out = candidate_notes(spark, notes, targets, settings, cached)
    else:
        out = targets.select("query_norm", "query_key").withColumn("notes", F.lit(None).cast("array<string>"))
    if log is not None and settings.history_k > 0:
        out = out.join(history(spark, log, targets, settings), "query_key", "left")
    else:
        out = out.withColumn("history", F.lit(None).cast("array<string>"))
    empty = F.array().cast("array<string>")
    return out.select(
        "query_norm", "query_key",
        F.coalesce("history", empty).alias("history"), F.coalesce("notes", empty).alias("notes"),
    )


def read_notes(spark: "SparkSession", dt: str) -> "DataFrame | None":
    """Notes that existed on ``dt`` (a backfilled date must not see notes written later)."""
    from pyspark.sql import functions as F

    src = dataset(NOTES)
    if not path_exists(src):
        return None
    notes = spark.read.parquet(str(src))
    if "created_dt" in notes.columns:
        notes = notes.where(F.col("created_dt").isNull() | (F.col("created_dt") <= F.lit(dt)))
    return notes


def run(spark: "SparkSession", dt: str, settings: SamplingSettings) -> ContextReport:
    """Read the day's sample, the log window and the notes pool; write ``curated/query_context/dt=D``."""
    from pyspark.sql import functions as F

    src = partition(QUERY_SAMPLE, dt)
    if not path_exists(src):
        raise FileNotFoundError(f"no query_sample partition {src}: run the sample job for {dt} first")
    targets = spark.read.parquet(str(src)).select("query_norm", "query_key")
    log, days = read_log_window(spark, dt, settings.history_lookback_days)
    notes = read_notes(spark, dt)
    _cached: list = []
    context = build_context(spark, targets, log, notes, settings, _cached)

    out = partition(QUERY_CONTEXT, dt)
    # No coalesce(1) (it would pull the final joins into one task): adaptive execution sizes the files.
    context.write.mode("overwrite").parquet(str(out))
    stats = spark.read.parquet(str(out)).agg(
        F.count("*").alias("queries"),
        F.sum((F.size("history") > 0).cast("long")).alias("with_history"),
        F.sum((F.size("notes") > 0).cast("long")).alias("with_notes"),
    ).first()
    report = ContextReport(
        dt=dt, queries=stats["queries"], with_history=stats["with_history"] or 0,
        with_notes=stats["with_notes"] or 0, log_days=days,
        log_rows=log.count() if log is not None else 0, notes_pool=notes.count() if notes is not None else 0,
    )
    for frame in _cached:
        frame.unpersist()
    logger.info(
        "context dt=%s: %d queries, %d with history (%d log days, %d rows), %d with notes (pool %d)",
        dt, report.queries, report.with_history, report.log_days, report.log_rows, report.with_notes,
        report.notes_pool,
    )
    return report
