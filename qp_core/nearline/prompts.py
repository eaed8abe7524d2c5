"""Prompts step: sample ⋈ context -> chat messages, sorted and sharded (``curated/prompts/dt=D/shard=NNNNN``).

Rows are sorted by (prefix_hash, messages_json) so prompts that share a prefix sit next to each other —
vLLM's prefix cache then reuses the I ⊕ R block (and common query beginnings) across a shard. Shards are
the unit the generation step reads, maps over workers and resumes; ``_manifest.json`` in the partition
lists them with row counts so the generator (and the DAG's task mapping) needs no Spark to plan.

Reading a shard without Spark: ``pyarrow.parquet.read_table(dir / "shard=00000").sort_by("pos")``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from qp_core.lake import MANIFEST_NAME, PROMPTS, QUERY_CONTEXT, QUERY_SAMPLE, partition
from qp_core.nearline.settings import SamplingSettings
from qp_core.ops.spark import global_rank, path_exists

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

PROMPT_COLUMNS = ("query_norm", "query_key", "messages_json", "prefix_hash", "rules_version", "prompt_version",
                  "reason", "pos")
ROWS_PER_WRITE_TASK = 50_000
MESSAGES_SCHEMA = ("query_key string, query_norm string, reason string, messages_json string, "
                   "prefix_hash string, rules_version string, prompt_version string")


@dataclass
class PromptsReport:
    dt: str
    rules_mode: str
    rows: int = 0
    shards: list[dict] = field(default_factory=list)
    prefix_hashes: list[str] = field(default_factory=list)
    rules_version: str | None = None
    prompt_version: str | None = None


def system_hash(system: str) -> str:
    """Hash of a system message, the same digest as ``qp_core.prompt.prefix_hash`` (sha256, 12 hex)."""
    return hashlib.sha256(system.encode("utf-8")).hexdigest()[:12]


def prefix_hash(messages: list[dict]) -> str:
    """Hash of the system message: prompts with equal hashes share the cacheable I ⊕ R prefix."""
    return system_hash(next((m["content"] for m in messages if m.get("role") == "system"), ""))


def message_batches(batches: Iterable["pa.RecordBatch"], rules_mode: str) -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: (query_key, query_norm, reason, history, notes) -> messages and versions."""
    import pyarrow as pa

    from qp_core.prompt import build_messages, prompt_metadata

    meta = prompt_metadata(rules_mode)
    version, prompt_version = meta["rules_version"], str(meta["prompt_version"])
    for batch in batches:
        d = batch.to_pydict()
        msgs_json, hashes = [], []
        for q, hist, notes in zip(d["query_norm"], d["history"], d["notes"]):
            messages = build_messages(q, list(hist or ()), list(notes or ()), rules_mode=rules_mode)
            msgs_json.append(json.dumps(messages, ensure_ascii=False, separators=(",", ":")))
            hashes.append(prefix_hash(messages))
        n = len(msgs_json)
        yield pa.RecordBatch.from_arrays(
            [pa.array(d["query_key"], pa.string()), pa.array(d["query_norm"], pa.string()),
             pa.array(d["reason"], pa.string()), pa.array(msgs_json, pa.string()), pa.array(hashes, pa.string()),
             pa.array([version] * n, pa.string()), pa.array([prompt_version] * n, pa.string())],
            names=["query_key", "query_norm", "reason", "messages_json", "prefix_hash", "rules_version",
                   "prompt_version"],
        )


def shard_plan(rows: int, shard_size: int, shards: int | None) -> tuple[int, int]:
    """(number of shards, rows per shard): ``--shards N`` wins, else ``ceil(rows / shard_size)``."""
    if rows <= 0:
        return 0, max(shard_size, 1)
    if shards:
        n = max(1, min(shards, rows))
        per = -(-rows // n)
        return -(-rows // per), per
    per = max(shard_size, 1)
    return -(-rows // per), per


def shard_name(i: int) -> str:
    return f"{i:05d}"


def build_prompts(
    spark: "SparkSession", sample: "DataFrame", context: "DataFrame | None", rules_mode: str
) -> "DataFrame":
    """Sample ⋈ context -> one prompt row per query (not yet sorted or sharded)."""
    from pyspark.sql import functions as F

    base = sample.select("query_key", "query_norm", "reason")
    if context is not None:
        base = base.join(context.select("query_key", "history", "notes"), "query_key", "left")
    else:
        base = base.withColumn("history", F.lit(None).cast("array<string>")).withColumn(
            "notes", F.lit(None).cast("array<string>"))
    return base.mapInArrow(partial(message_batches, rules_mode=rules_mode), MESSAGES_SCHEMA)


def assign_shards(prompts: "DataFrame", per_shard: int, cached: list | None = None) -> "DataFrame":
    """Global order (prefix_hash, messages_json, query_key) -> ``pos``; ``shard`` = zero-padded pos // per_shard.

    ``global_rank`` sorts in parallel (no single-task window), so an uncapped day's prompts scale too.
    """
    from pyspark.sql import functions as F

    ranked = global_rank(prompts, ["prefix_hash", "messages_json", "query_key"], "pos", cached)
    return (
        ranked.withColumn("pos", (F.col("pos") - 1).cast("int"))
        .withColumn("shard", F.lpad(F.floor(F.col("pos") / per_shard).cast("string"), 5, "0"))
    )


def write_manifest(out_dir, report: PromptsReport) -> None:
    tmp = os.path.join(out_dir, MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(asdict(report), fh, ensure_ascii=False, indent=1)
    os.replace(tmp, os.path.join(out_dir, MANIFEST_NAME))


def run(spark: "SparkSession", dt: str, settings: SamplingSettings, rules_mode: str | None = None,
        shards: int | None = None) -> PromptsReport:
    """Write ``curated/prompts/dt=D/shard=NNNNN`` plus ``_manifest.json``; the partition is replaced whole."""
    rules_mode = rules_mode or settings.rules_mode
    src = partition(QUERY_SAMPLE, dt)
    if not path_exists(src):
        raise FileNotFoundError(f"no query_sample partition {src}: run the sample job for {dt} first")
    sample = spark.read.parquet(str(src))
    ctx_path = partition(QUERY_CONTEXT, dt)
    context = spark.read.parquet(str(ctx_path)) if path_exists(ctx_path) else None
    if context is None:
        logger.warning("prompts dt=%s: no query_context partition; prompts carry no history or notes", dt)

    prompts = build_prompts(spark, sample, context, rules_mode).cache()
    cached = [prompts]
    try:
        # One small aggregate gives the row count and the manifest's hashes and versions (and fills the
        # cache the ranking reads): no count() plus a read-back of the written partition.
        meta = prompts.groupBy("prefix_hash", "rules_version", "prompt_version").count().collect()
        rows = sum(r["count"] for r in meta)
        n_shards, per_shard = shard_plan(rows, settings.shard_size, shards)
        out = partition(PROMPTS, dt)
        sharded = assign_shards(prompts, per_shard, cached).select(*PROMPT_COLUMNS, "shard")
        (
            # Whole shards per task (one file per shard), ~ROWS_PER_WRITE_TASK rows per task: thousands of
            # shards on an uncapped day must not mean thousands of tiny tasks.
            sharded.repartition(max(1, min(n_shards, -(-rows // ROWS_PER_WRITE_TASK))), "shard")
            .sortWithinPartitions("shard", "pos")
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "static")  # stale shards of an earlier, larger run must go
            .partitionBy("shard")
            .parquet(str(out))
        )
        report = PromptsReport(dt=dt, rules_mode=rules_mode, rows=rows)
        if rows:
            # pos is dense 0..rows-1 and shard = pos // per_shard, so every shard but the last is full.
            report.shards = [
                {"shard": shard_name(i), "path": f"shard={shard_name(i)}", "rows": min(per_shard, rows - i * per_shard)}
                for i in range(n_shards)
            ]
            report.prefix_hashes = sorted({r["prefix_hash"] for r in meta})
            report.rules_version = meta[0]["rules_version"]
            report.prompt_version = meta[0]["prompt_version"]
        else:
            out.mkdir(parents=True, exist_ok=True)
        write_manifest(str(out), report)
    finally:
        for frame in cached:
            frame.unpersist()
    logger.info("prompts dt=%s mode=%s: %d rows in %d shards (prefix hashes %s)", dt, rules_mode, rows,
                len(report.shards), report.prefix_hashes)
    return report
