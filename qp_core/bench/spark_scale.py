"""Scale benchmark of the nearline Spark steps on Zipf days of 10^5..10^7 log rows, next to a same-session anchor.

    python -m qp_core.bench scale                      # 10^5 and 10^6 rows a day
    python -m qp_core.bench scale --large              # ... and 10^7 (tens of minutes on 2 cores)
    python -m qp_core.bench scale --sizes 100000 --out var/bench/spark_scale

Why the days are built inside Spark: the Python world generator makes ~20k rows a day; a production day is
10^7-10^8. Each day here is ``spark.range(N)`` with query ids drawn from a Zipf law (exponent ``--zipf-s``,
vocabulary of N/2 ranks: 13-18% of the rows are distinct, like real traffic), ranks mapped to text made of the
world's own composed queries and lexicon words (``qp_core.world``), and every rank past the head offset by
the day, so the tail is new each day while the head repeats. A few rows are null or symbols-only (quarantine).
Notes are the world's notes pool.

Per size, in ONE Spark session: the anchor (a plain Spark SQL normalise-count-distinct group-by over the day,
written to Parquet like the steps write theirs), then sample -> context -> prompts with the daily budget of
``conf/sampling.yaml`` (capped) and with no budget (uncapped: every distinct query). Input rows: sample = the
day, context = the lookback window (``--lookback-days`` days of N rows), prompts = the sample. Reported:
rows/s, the ratio to the anchor's rows/s, and each step's cost slope d log(seconds) / d log(day rows) over
the two largest sizes (1.0 = linear). A small warm-up day runs first and is not reported (JVM start, JIT).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

DT = "2026-11-30"
UNCAPPED = 10**9


# ------------------------------------------------------------------------------------------------ input
def world_vocabulary(pool_size: int, seed: int) -> tuple[list[str], list[str]]:
    """(composed queries of the world, distinct lexicon words): the text the Zipf ranks are mapped to."""
    from qp_core.world.build import composer
    from qp_core.world.drift import world_lexicon
    from qp_core.world.settings import load_world_settings

    s = load_world_settings()
    c = composer(s, random.Random(seed), s.days - 1)
    pool: dict[str, None] = {}
    for _ in range(pool_size * 4):
        pool[c.render(c.compose())] = None
        if len(pool) >= pool_size:
            break
    words = sorted({w.text for w in world_lexicon(s).all_words()})
    return list(pool), words


def write_notes(root: Path) -> int:
    """The world's notes pool at ``raw/notes`` (what context retrieves from)."""
    from qp_core.world.build import _notes_table, _write, composer
    from qp_core.world.notes import make_notes
    from qp_core.world.settings import load_world_settings

    s = load_world_settings()
    notes = make_notes(s.notes, s.seed, s.start_date, s.days, make_composer=lambda rng, day: composer(s, rng, day))
    _write(_notes_table(notes), root / "raw/notes/part-00000.parquet")
    return len(notes)


def zipf_day(spark, n: int, day: int, dt: str, pool, words, zipf_s: float):
    """A day of ``n`` log rows (user_id, session_id, event_time, query, platform), generated in the JVM."""
    from pyspark.sql import functions as F

    vocab = max(n // 2, 1000)  # ranks; 13-18% of rows distinct at s=1.05 (measured by the bench itself)
    head = max(vocab // 20, 100)  # ranks shared by every day; the rest is the day's own tail
    p, w = len(pool), len(words)
    pool_df = F.broadcast(spark.createDataFrame(list(enumerate(pool)), "a long, base string"))
    words_df = F.broadcast(spark.createDataFrame(list(enumerate(words)), "b long, word string"))
    e = 1.0 - zipf_s
    u = F.rand(seed=7919 * day + 17)
    rank = F.floor(F.pow((F.lit(float(vocab) ** e) - 1) * u + 1, F.lit(1.0 / e))).cast("long")
    qid = F.when(rank <= head, rank).otherwise(rank + F.lit(day) * vocab)
    epoch = int(time.mktime(time.strptime(dt, "%Y-%m-%d")))
    rows = (
        spark.range(n, numPartitions=max(2, n // 1_000_000))
        .withColumn("qid", qid)
        .withColumn("a", F.col("qid") % p)
        .withColumn("b", (F.col("qid") / p).cast("long") % w)
        .withColumn("c", (F.col("qid") / (p * w)).cast("long"))
        .join(pool_df, "a").join(words_df, "b")
    )
    text = F.when(F.col("qid") < p, F.col("base")).otherwise(F.concat_ws(" ", "base", "word"))
    text = F.when(F.col("c") > 0, F.concat_ws(" ", text, F.col("c").cast("string"))).otherwise(text)
    text = F.when(F.col("id") % 5 == 0, F.upper(text)).otherwise(text)  # raw variants of one normalised query
    query = (F.when(F.col("id") % 997 == 0, F.lit(None).cast("string"))
             .when(F.col("id") % 991 == 0, F.lit("!!!")).otherwise(text))
    session = (F.col("id") / 4).cast("long")
    return rows.select(
        F.concat(F.lit("u"), F.pmod(F.xxhash64(session), F.lit(max(n // 20, 1))).cast("string")).alias("user_id"),
        F.concat(F.lit(f"s{day}-"), session.cast("string")).alias("session_id"),
        F.timestamp_seconds(F.lit(epoch) + F.col("id") * (86400.0 / n)).alias("event_time"),
        query.alias("query"),
        F.element_at(F.array(F.lit("ios"), F.lit("android"), F.lit("web")), (F.col("id") % 3 + 1).cast("int"))
        .alias("platform"),
    )


def lookback(dt: str, days: int) -> list[tuple[int, str]]:
    from qp_core.nearline.context import lookback_dates

    return list(enumerate(lookback_dates(dt, days)))


# ------------------------------------------------------------------------------------------------ timing
def anchor(spark, root: Path, dt: str) -> float:
    """Seconds of a plain Spark SQL normalise-count-distinct group-by over the day, written to Parquet."""
    log = spark.read.parquet(str(root / f"raw/query_log/dt={dt}"))
    t = time.perf_counter()
    spark.sql(
        "SELECT lower(trim(query)) AS q, count(*) AS freq, count(DISTINCT user_id) AS uv "
        "FROM {log} WHERE query IS NOT NULL GROUP BY lower(trim(query))", log=log,
    ).write.mode("overwrite").parquet(str(root / "bench/anchor"))
    return time.perf_counter() - t


def run_size(spark, root: Path, n: int, pool, words, args) -> list[dict[str, Any]]:
    from qp_core.nearline import context, prompts, sample
    from qp_core.nearline.settings import load_sampling_settings

    for day, d in lookback(DT, args.lookback_days):
        zipf_day(spark, n, day, d, pool, words, args.zipf_s).write.mode("overwrite").parquet(
            str(root / f"raw/query_log/dt={d}"))
    load = os.getloadavg()[0]
    a_s = anchor(spark, root, DT)
    out = [{"size": n, "step": "anchor", "budget": "-", "rows": n, "seconds": a_s, "load1": load}]
    for budget_name, budget in (("capped", None), ("uncapped", UNCAPPED)):
        settings = load_sampling_settings(history_lookback_days=args.lookback_days, daily_budget=budget)
        t = time.perf_counter()
        s = sample.run(spark, DT, f"bench-{budget_name}", settings)
        out.append({"size": n, "step": "sample", "budget": budget_name, "rows": s.rows,
                    "seconds": time.perf_counter() - t, "distinct": s.distinct_queries,
                    "selected": s.selected_total, "quarantined": sum(s.quarantined.values())})
        t = time.perf_counter()
        c = context.run(spark, DT, settings)
        out.append({"size": n, "step": "context", "budget": budget_name, "rows": c.log_rows,
                    "seconds": time.perf_counter() - t, "queries": c.queries, "with_history": c.with_history,
                    "with_notes": c.with_notes})
        t = time.perf_counter()
        pr = prompts.run(spark, DT, settings)
        out.append({"size": n, "step": "prompts", "budget": budget_name, "rows": pr.rows,
                    "seconds": time.perf_counter() - t, "shards": len(pr.shards)})
    for r in out:
        r["rows_per_s"] = round(r["rows"] / r["seconds"]) if r["seconds"] else None
        r["anchor_ratio"] = round(r["rows_per_s"] / out[0]["rows_per_s"], 3) if out[0]["rows_per_s"] else None
        r["seconds"] = round(r["seconds"], 2)
    out[0]["load1_after"] = os.getloadavg()[0]
    return out


def slopes(rows: list[dict[str, Any]]) -> dict[str, float]:
    """d log(seconds) / d log(day rows) of each (step, budget) between the two largest sizes."""
    sizes = sorted({r["size"] for r in rows})
    if len(sizes) < 2:
        return {}
    lo, hi = sizes[-2], sizes[-1]
    out = {}
    for r in rows:
        if r["size"] != hi:
            continue
        prev = next(x for x in rows if x["size"] == lo and x["step"] == r["step"] and x["budget"] == r["budget"])
        if prev["seconds"] and r["seconds"]:
            key = r["step"] if r["budget"] == "-" else f"{r['step']}/{r['budget']}"
            out[key] = round(math.log(r["seconds"] / prev["seconds"]) / math.log(hi / lo), 2)
    return out


# ------------------------------------------------------------------------------------------------ report
def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Nearline Spark steps at scale ({report['master']}, {report['cpu_count']} cores, "
             f"driver memory {report.get('driver_memory')})", "",
             f"Zipf s={report['zipf_s']}, lookback {report['lookback_days']} days, daily budget "
             f"{report['daily_budget']} (capped) or none (uncapped). Anchor: {report['anchor']}.", "",
             "| day rows | step | budget | input rows | seconds | rows/s | / anchor rows/s |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['size']:,} | {r['step']} | {r['budget']} | {r['rows']:,} | {r['seconds']} | "
                     f"{r['rows_per_s']:,} | {r['anchor_ratio']} |")
    lines += ["", f"Cost slope (d log s / d log rows, {report['slope_between']}): "
              + ", ".join(f"{k} {v}" for k, v in report["slopes"].items()),
              "", f"Targets: slope <= 1.1; sample and context >= 0.5 x anchor rows/s at the largest size. "
              f"Load average (1 min) seen: {report['load_seen']}."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted({(r["step"], r["budget"]) for r in report["rows"]})
    for step, budget in keys:
        pts = sorted((r["size"], r["rows_per_s"]) for r in report["rows"] if (r["step"], r["budget"]) == (step, budget))
        ax.plot(*zip(*pts), marker="o", label=step if budget == "-" else f"{step} ({budget})",
                linewidth=3 if step == "anchor" else 1.5, color="black" if step == "anchor" else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("log rows in the day")
    ax.set_ylabel("input rows / s")
    ax.set_title("Nearline Spark steps vs the same-session anchor")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="qp_core.bench scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100000,1000000", help="rows per day, comma separated")
    p.add_argument("--large", action="store_true", help="add 10^7 rows a day")
    p.add_argument("--lookback-days", type=int, default=2, help="days in context's window (each of N rows)")
    p.add_argument("--zipf-s", type=float, default=1.05)
    p.add_argument("--master", default=None)
    p.add_argument("--driver-memory", default=None, help="e.g. 4g (local mode: the executors' memory too)")
    p.add_argument("--out", default=None, help="folder for JSON, Markdown and PNG (default $QP_HOME/bench/scale)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x] + ([10**7] if args.large else [])

    from qp_core.nearline.settings import load_sampling_settings
    from qp_core.ops.process import setup_job_logging
    from qp_core.ops.spark import get_session, load_spark_settings

    setup_job_logging()
    from qp_core import paths

    out_dir = Path(args.out) if args.out else paths.qp_home() / "bench" / "scale"
    out_dir.mkdir(parents=True, exist_ok=True)
    pool, words = world_vocabulary(8000, seed=11)
    settings = load_spark_settings(master=args.master)
    if args.driver_memory:
        settings.conf["spark.driver.memory"] = args.driver_memory
    rows: list[dict[str, Any]] = []
    saved = os.environ.get("QP_LAKE_ROOT")  # the steps read and write a temporary lake; restored after
    with tempfile.TemporaryDirectory(prefix="qp-bench-scale-") as tmp:
        root = Path(tmp)
        os.environ["QP_LAKE_ROOT"] = str(root)
        write_notes(root)
        spark = get_session("qp-bench-scale", settings)
        try:
            run_size(spark, root, 5_000, pool, words, args)  # warm-up (JVM, JIT, Python workers), not reported
            for n in sizes:
                rows += run_size(spark, root, n, pool, words, args)
                print(json.dumps([r for r in rows if r["size"] == n], ensure_ascii=False), flush=True)
        finally:
            spark.stop()
            os.environ.pop("QP_LAKE_ROOT", None) if saved is None else os.environ.update(QP_LAKE_ROOT=saved)
    loads = [r[k] for r in rows if r["step"] == "anchor" for k in ("load1", "load1_after")]
    sz = sorted({r["size"] for r in rows})
    report = {
        "master": settings.master, "cpu_count": os.cpu_count(), "zipf_s": args.zipf_s,
        "driver_memory": settings.spark_conf().get("spark.driver.memory"),
        "lookback_days": args.lookback_days, "daily_budget": load_sampling_settings().daily_budget,
        "anchor": "SELECT lower(trim(query)), count(*), count(DISTINCT user_id) ... GROUP BY 1, written to Parquet",
        "rows": rows, "slopes": slopes(rows), "slope_between": f"{sz[-2]:,} -> {sz[-1]:,}" if len(sz) > 1 else "-",
        "load_seen": [round(x, 2) for x in loads],
        "spark_conf": {k: v for k, v in settings.spark_conf().items() if "adaptive" in k or "shuffle" in k},
    }
    (out_dir / "spark_scale.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    (out_dir / "spark_scale.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out_dir / "spark_scale.png")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
