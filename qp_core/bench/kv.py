"""KV benchmark: publish keys/s and ``QPClient.mget`` p50/p99 for 50 keys, next to baselines from the same run.

    python -m qp_core.bench.kv [--keys 20000] [--iters 2000] [--url redis://...] [--json]

Without ``--url`` it starts its own redis-server (``qp_core.ops.redis_server``) in a temp dir and stops it
after. Baselines, measured against the same server in the same run, so the overhead of our code
(validation, normalisation, hashing, the pointer read) is visible rather than guessed:

* publish: raw redis-py pipelined SET of the same payloads in the same batch size, and
  ``redis-benchmark -P <batch> -t set`` if that binary is on PATH (apt ``redis-tools``);
* mget: raw redis-py ``MGET`` of 50 precomputed keys (one round trip), and ``redis-benchmark MGET``
  of 50 keys (C client, no Python).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
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


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Valid qp_results rows with realistic key/value sizes (Chinese text, 3-6 segments)."""
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
        rows.append({"query_key": query_key(qn), "query_norm": qn, "result_json": json.dumps(result, ensure_ascii=False),
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
    return {name: {"p50_ms": round(pct(v, 50), 4), "p99_ms": round(pct(v, 99), 4), "mean_ms": round(statistics.fmean(v), 4)}
            for name, v in lat.items()}


def redis_benchmark(port: int, args: list[str]) -> dict[str, float] | None:
    """Run redis-benchmark with --csv; returns rps and latency columns, or None if not installed."""
    binary = shutil.which("redis-benchmark")
    if not binary or not args:
        return None
    cmd = [binary, "-h", "127.0.0.1", "-p", str(port), "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    rows = list(csv.reader(io.StringIO(out)))
    if len(rows) < 2:
        return None
    header, values = rows[0], rows[-1]
    res = {"cmd": " ".join(cmd[1:6]) + " ... " + " ".join(a for a in args if not a.startswith("qp:")) }
    for h, v in zip(header[1:], values[1:]):
        try:
            res[h] = float(v)
        except ValueError:
            pass
    return res


def _drop_prefix(raw) -> None:
    keys = list(raw.scan_iter(match=f"{BENCH_PREFIX}:*", count=1000))
    for i in range(0, len(keys), 1000):
        raw.delete(*keys[i:i + 1000])


def run(url: str | None, keys: int, iters: int, batch: int, use_redis_benchmark: bool = True) -> dict[str, Any]:
    import redis

    from qp_core.ops import redis_server
    from qp_core.kv import KVPublisher, KVSettings, QPClient
    from qp_core.kv.layout import encode_value

    tmp = None
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="qp-bench-redis-"))
        url = redis_server.start(tmp, write_url_file=False, persist=False).url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # a prefix of its own: the benchmark never touches the real pointer or namespaces of a shared server
    settings = KVSettings(batch_size=batch, prefix=BENCH_PREFIX)
    own_server = tmp is not None
    out: dict[str, Any] = {"keys": keys, "batch_size": batch, "iters": iters, "url": url}
    try:
        raw = redis.Redis.from_url(url, decode_responses=True)
        info = raw.info("server")
        out["redis_version"] = info.get("redis_version")
        rows = synthetic_rows(keys)
        ns = "nbench"
        _drop_prefix(raw)
        pub = KVPublisher(url, settings=settings)
        out["load_avg_1m"] = round(__import__("os").getloadavg()[0], 2)
        rep = pub.publish(rows, ns, "2026-11-01")  # new keys
        rep2 = pub.publish(rows, ns, "2026-11-01")  # refresh (same values)
        out["publish"] = {"new_keys_per_s": round(rep.keys_per_s), "refresh_keys_per_s": round(rep2.keys_per_s),
                          "written": rep.written}
        # baseline 1: raw redis-py pipelined SET of the same encoded payloads (no validation, no GET)
        payloads = [(f"{BENCH_PREFIX}:nbase:{r['query_key']}", encode_value(json.loads(r["result_json"]), r["query_norm"],
                                                                  "model", "2026-11-01")) for r in rows]
        t0 = time.perf_counter()
        pipe = raw.pipeline(transaction=False)
        for i, (k, v) in enumerate(payloads, 1):
            pipe.set(k, v)
            if i % batch == 0:
                pipe.execute()
        pipe.execute()
        out["publish"]["baseline_redis_py_set_keys_per_s"] = round(len(payloads) / (time.perf_counter() - t0))
        mean_len = int(statistics.fmean(len(v.encode()) for _, v in payloads))
        out["publish"]["value_bytes_mean"] = mean_len
        # redis-benchmark SET writes its own key:* keys: only against a server we started
        bench_set = use_redis_benchmark and own_server and redis_benchmark(port, ["-t", "set", "-P", str(batch), "-n", str(max(keys, 200_000)),
                                           "-d", str(mean_len), "-r", "1000000", "-c", "1"])
        if bench_set:
            out["publish"]["baseline_redis_benchmark_set"] = bench_set
        # mget of 50 keys
        pub.activate(ns, force=True)
        client = QPClient(url, settings=settings)
        rng = random.Random(1)
        sample_queries = [[r["query_norm"] for r in rng.sample(rows, 50)] for _ in range(64)]
        sample_keys = [[client.keys.result(ns, query_key(q)) for q in qs] for qs in sample_queries]
        assert all(v is not None for v in client.mget(sample_queries[0])), "benchmark keys must hit"
        out["mget50"] = time_interleaved({
            "qpclient": lambda i: client.mget(sample_queries[i % 64]),
            "baseline_redis_py_mget": lambda i: raw.mget(sample_keys[i % 64]),
            "baseline_redis_py_get_pointer": lambda i: raw.get(client.keys.active),
        }, iters)
        bench_mget = use_redis_benchmark and redis_benchmark(port, ["-c", "1", "-n", str(iters * 5), "MGET", *sample_keys[0]])
        if bench_mget:
            out["mget50"]["baseline_redis_benchmark_mget"] = bench_mget
        _drop_prefix(raw)
    finally:
        if tmp is not None:
            redis_server.stop(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m qp_core.bench.kv", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="existing server (default: start a private one); only qpbench:* keys are written and removed")
    p.add_argument("--keys", type=int, default=20_000)
    p.add_argument("--iters", type=int, default=2_000)
    p.add_argument("--batch", type=int, default=1_000)
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args(argv)
    out = run(args.url, args.keys, args.iters, args.batch)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return out
    pubr, m = out["publish"], out["mget50"]
    print(f"redis {out['redis_version']}  keys={out['keys']} batch={out['batch_size']} value≈{pubr['value_bytes_mean']}B"
          f"  (load avg 1m at start: {out['load_avg_1m']})")
    print(f"publish (validate+SET GET, pipelined): new {pubr['new_keys_per_s']:,} keys/s, "
          f"refresh {pubr['refresh_keys_per_s']:,} keys/s")
    print(f"  baseline redis-py pipelined SET:      {pubr['baseline_redis_py_set_keys_per_s']:,} keys/s")
    if "baseline_redis_benchmark_set" in pubr:
        print(f"  baseline redis-benchmark SET -P {out['batch_size']}:  {pubr['baseline_redis_benchmark_set'].get('rps', 0):,.0f} req/s")
    print(f"mget 50 keys, {out['iters']} iters (ms):")
    for name, v in m.items():
        if name == "baseline_redis_benchmark_mget":
            print(f"  {name:32s} p50 {v.get('p50_latency_ms')}  p99 {v.get('p99_latency_ms')}  ({v.get('rps', 0):,.0f} req/s)")
        else:
            print(f"  {name:32s} p50 {v['p50_ms']}  p99 {v['p99_ms']}  mean {v['mean_ms']}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
