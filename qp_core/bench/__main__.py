"""``python -m qp_core.bench all|kv|generate|nearline|scale|overhead [ARGS]``: one benchmark, or all of them into one report.

    python -m qp_core.bench all [--out-dir DIR] [--size small|large] [--only kv,nearline]
    python -m qp_core.bench kv --keys 20000          # any single benchmark takes its own flags

``all`` runs every benchmark in this process, one after the other (the box is shared: never in parallel),
and writes ``bench.json`` (every benchmark's full output) and ``bench.md`` (a summary table per benchmark)
to ``--out-dir`` (default ``$QP_HOME/bench``). ``--size small`` (the default) keeps the whole run within a
few minutes on 2 CPU cores; ``--size large`` uses each benchmark's own defaults (the figures the docs
quote). A benchmark that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from qp_core import paths

BENCHES = ("kv", "nearline", "scale", "generate", "overhead")

# per size: the arguments each benchmark gets under `all`
SIZES: dict[str, dict[str, list[str]]] = {
    "small": {
        "kv": ["--keys", "2000", "--iters", "300", "--json"],
        "nearline": ["--repeat", "1", "--master", "local[1]"],
        "generate": ["--n", "16", "--modes", "compact", "--max-new-tokens", "64", "--caching", "on,off"],
        "scale": ["--sizes", "20000,100000"],
        "overhead": ["--n", "64", "--shard-size", "16", "--rounds", "1"],
    },
    # scale: 10^5 and 10^6 rows a day; `python -m qp_core.bench scale --large` adds 10^7 (not part of `all`)
    "large": {"kv": ["--json"], "nearline": ["--repeat", "2"], "generate": [], "scale": [], "overhead": []},
}

# the lake the nearline benchmark reads when none is given: a small synthetic world (as in the tests)
BENCH_WORLD = dict(seed=7, days=2, rows_per_day=2000, start_date="2026-11-01", annotations_total=300, golden=200,
                   notes=400, head_size=300, users=500)


def _run_kv(args: list[str]) -> Any:
    from qp_core.bench import kv

    return kv.main(args)


def _run_generate(args: list[str]) -> Any:
    from qp_core.bench import generate

    return generate.main(args)


def _run_nearline(args: list[str]) -> Any:
    from qp_core.bench import nearline

    if "--lake" in args:
        return nearline.main(args)
    from qp_core.world import generate as generate_world

    saved = os.environ.get("QP_LAKE_ROOT")  # nearline.main points QP_LAKE_ROOT at the lake it reads
    try:
        with tempfile.TemporaryDirectory(prefix="qp-bench-lake-") as tmp:
            lake = Path(tmp) / "lake"
            generate_world(lake, **BENCH_WORLD)
            dt = sorted(p.name[3:] for p in (lake / "raw" / "query_log").glob("dt=*"))[-1]
            return nearline.main(["--lake", str(lake), "--dt", dt, *args])
    finally:
        if saved is None:
            os.environ.pop("QP_LAKE_ROOT", None)
        else:
            os.environ["QP_LAKE_ROOT"] = saved


def _run_scale(args: list[str]) -> Any:
    from qp_core.bench import spark_scale

    return spark_scale.main(args)


def _run_overhead(args: list[str]) -> Any:
    from qp_core.bench import generate_overhead

    return generate_overhead.main(args)


RUNNERS: dict[str, Callable[[list[str]], Any]] = {"kv": _run_kv, "generate": _run_generate, "nearline": _run_nearline,
                                                  "scale": _run_scale, "overhead": _run_overhead}


def run_all(size: str = "small", only: list[str] | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Every benchmark (or ``only``) with the ``size`` arguments; writes ``bench.json`` and ``bench.md``."""
    out_dir = Path(out_dir or paths.qp_home() / "bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"size": size, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "benchmarks": {}}
    for name in only or BENCHES:
        args = SIZES[size][name]
        t0 = time.monotonic()
        entry: dict[str, Any] = {"args": args}
        try:
            entry["result"] = RUNNERS[name](list(args))
            entry["ok"] = True
        except Exception as exc:  # one failing benchmark must not hide the others' figures
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
        entry["wall_s"] = round(time.monotonic() - t0, 1)
        report["benchmarks"][name] = entry
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    json_path.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    report["paths"] = {"json": str(json_path), "markdown": str(md_path)}
    return report


def markdown(report: dict[str, Any]) -> str:
    """The human summary of a ``run_all`` report: one section per benchmark, ratios next to their anchors."""
    lines = [f"# Benchmarks ({report['size']}, {report['started']})", ""]
    for name, entry in report["benchmarks"].items():
        lines += [f"## {name} ({entry['wall_s']} s; `python -m qp_core.bench {name} {' '.join(entry['args'])}`)", ""]
        if not entry.get("ok"):
            lines += [f"failed: `{entry.get('error')}`", ""]
            continue
        lines += _SUMMARIES[name](entry["result"]) + [""]
    return "\n".join(lines)


def _kv_summary(r: dict[str, Any]) -> list[str]:
    pub, m = r["publish"], r["mget50"]
    anchor = pub.get("anchor_redis_benchmark_set", {}).get("rps_median")
    lines = [f"{r.get('server')}, {r['keys']} keys, batch {r['batch_size']}, value {pub['value_bytes']} B", "",
             "| measure | value | anchor (same server, same run) | ratio |", "|---|---|---|---|"]
    for name, v in pub.items():
        if isinstance(v, dict) and "keys_per_s" in v:
            ratio = f"{v['keys_per_s'] / anchor:.3f}" if anchor else "–"
            lines.append(f"| publish {name} keys/s | {v['keys_per_s']} | redis-benchmark SET -P 1000 -c 1: "
                         f"{anchor or '–'} | {ratio} |")
    bench = m.get("anchor_redis_benchmark_mget") or {}
    for key in ("qpclient", "baseline_redis_py_mget"):
        v = m[key]
        lines.append(f"| mget 50 keys {key} p50 / p99 ms | {v['p50_ms']} / {v['p99_ms']} | redis-benchmark MGET 50: "
                     f"{bench.get('p50_latency_ms', '–')} / {bench.get('p99_latency_ms', '–')} | "
                     f"{m.get('ratio_p50_vs_anchor', '–') if key == 'qpclient' else '–'} |")
    return lines


def _generate_summary(r: dict[str, Any]) -> list[str]:
    lines = [f"model: {r.get('model')}", "", "| rules mode | prefix caching | decoding | generations/s | valid rate |",
             "|---|---|---|---|---|"]
    for c in r.get("cells", []):
        lines.append(f"| {c['rules_mode']} | {c['prefix_caching']} | {c['decoding']} | {c['generations_per_s']} | "
                     f"{c['valid_rate']} |")
    for mode, ratio in r.get("speedup_on_vs_off", {}).items():
        lines.append(f"\nprefix caching on / off ({mode}): {ratio}×")
    return lines


def _nearline_summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| round | step | rows | seconds | rows/s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['step']} | {r['rows']} | {r['seconds']} | {r['rows_per_s']} |")
    return lines


def _scale_summary(r: dict[str, Any]) -> list[str]:
    from qp_core.bench.spark_scale import markdown as scale_markdown

    return scale_markdown(r).splitlines()[2:]  # the table and the slopes, next to the anchor rows


def _overhead_summary(r: dict[str, Any]) -> list[str]:
    from qp_core.bench.generate_overhead import markdown as overhead_markdown

    return overhead_markdown(r).splitlines()[2:]


_SUMMARIES = {"kv": _kv_summary, "generate": _generate_summary, "nearline": _nearline_summary,
              "scale": _scale_summary, "overhead": _overhead_summary}


def main(argv: list[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("all", *BENCHES):
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    if argv[0] != "all":
        return RUNNERS[argv[0]](argv[1:])
    p = argparse.ArgumentParser(prog="python -m qp_core.bench all", description="every benchmark, one report")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)}")
    p.add_argument("--out-dir", default=None, help="default $QP_HOME/bench")
    args = p.parse_args(argv[1:])
    only = [b for b in args.only.split(",") if b] if args.only else None
    report = run_all(args.size, only, Path(args.out_dir) if args.out_dir else None)
    for name, entry in report["benchmarks"].items():
        print(f"{name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error']} ({entry['wall_s']} s)")
    print(f"report: {report['paths']['json']} and {report['paths']['markdown']}")
    if not all(e["ok"] for e in report["benchmarks"].values()):
        raise SystemExit(1)
    return report


if __name__ == "__main__":  # vLLM spawns workers: the guard is required
    main()
