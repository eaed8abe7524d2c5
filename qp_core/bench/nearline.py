"""Rows/s of the nearline Spark steps on a lake (e.g. the default world of ``qp world generate``).

    python -m qp_core.bench.nearline --lake var/lake --dt 2026-11-07 [--repeat 2] [--master local[2]]

One session runs sample -> context -> prompts ``--repeat`` times (the first round includes JVM warm-up;
the last round is reported as the steady state). Input rows per step: sample = log rows of the day,
context = log rows of the lookback window, prompts = rows of the day's sample.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="qp_core.bench.nearline", description=__doc__.splitlines()[0])
    p.add_argument("--lake", required=True)
    p.add_argument("--dt", required=True)
    p.add_argument("--namespace", default="bench")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--master", default=None)
    p.add_argument("--rules-mode", default="compact")
    args = p.parse_args(argv)
    os.environ["QP_LAKE_ROOT"] = os.path.abspath(args.lake)

    from qp_core.nearline import context, prompts, sample
    from qp_core.nearline.settings import load_sampling_settings
    from qp_core.ops.process import setup_job_logging
    from qp_core.ops.spark import get_session, load_spark_settings

    setup_job_logging()
    t0 = time.perf_counter()
    spark = get_session("qp-bench", load_spark_settings(master=args.master))
    session_s = time.perf_counter() - t0
    settings = load_sampling_settings()
    results = []
    try:
        for round_ in range(1, args.repeat + 1):
            t = time.perf_counter()
            s = sample.run(spark, args.dt, args.namespace, settings)
            s_time = time.perf_counter() - t
            t = time.perf_counter()
            c = context.run(spark, args.dt, settings)
            c_time = time.perf_counter() - t
            t = time.perf_counter()
            pr = prompts.run(spark, args.dt, settings, rules_mode=args.rules_mode)
            p_time = time.perf_counter() - t
            for step, rows, secs, extra in (
                ("sample", s.rows, s_time, {"selected": s.selected_total, "quarantined": sum(s.quarantined.values())}),
                ("context", c.log_rows, c_time, {"queries": c.queries, "notes_pool": c.notes_pool}),
                ("prompts", pr.rows, p_time, {"shards": len(pr.shards)}),
            ):
                results.append({"round": round_, "step": step, "rows": rows, "seconds": round(secs, 2),
                                "rows_per_s": round(rows / secs) if secs else None, **extra})
    finally:
        spark.stop()
    print(json.dumps({"master": spark_master(args.master), "session_start_s": round(session_s, 1)}))
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    return results


def spark_master(override: str | None) -> str:
    from qp_core.ops.spark import load_spark_settings

    return load_spark_settings(master=override).master


if __name__ == "__main__":
    main()
