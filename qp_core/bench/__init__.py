"""Benchmarks: ``python -m qp_core.bench all`` (``make bench``) runs every one and writes one report.

Each benchmark prints ratios against an anchor measured in the same run (raw redis-py next to ``QPClient``,
prefix caching off next to on), never a bare number to compare with another machine's:

* :mod:`qp_core.bench.kv` — publish keys/s and ``mget`` of 50 keys vs raw redis-py / redis-benchmark;
* :mod:`qp_core.bench.generate` — vLLM generations/s, prefix caching on vs off, schema vs per-query grammar;
* :mod:`qp_core.bench.nearline` — rows/s of the Spark steps (sample, context, prompts) on a lake.
"""
