"""Benchmark: the generate job's overhead over raw ``vllm.LLM.generate`` on identical prompts and sampling params.

    python -m qp_core.bench overhead [--n 256 --shard-size 64 --max-new-tokens 48 --rounds 2] [--model-dir DIR]

One vLLM engine (the job's own settings: conf/generation.yaml + the model's profile), prompts written as the
prompts step writes them (``curated/prompts/dt=D/shard=N`` in a temporary lake). Timed, alternating order
each round, prefix cache reset before each run:

* ``raw``: ``LLM.generate`` on the prompts already rendered to token ids, with the per-row SamplingParams
  (query grammars included) built beforehand — vLLM alone, nothing of ours inside the clock;
* ``job``: ``qp_core.nearline.generate.run_generation`` on the shards — reading them, fingerprints, chat rendering,
  grammars, the engine call(s), writing each shard atomically, resume bookkeeping;
* ``job_per_shard`` (unless ``--no-per-shard``): the job with ``feed_rows=1``, one engine call per shard,
  as before this change: the batch drains at every shard end.

Reported: generations/s of each, and overhead = 1 - job / raw (target <= 5%). Greedy decoding, so the job's
texts must equal raw's (``same_texts``). The model defaults to ``qp_core.bench.generate``'s (registry production, else
a random-init tiny model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DT = "2026-11-30"
VERSION = "bench-overhead"


def write_shards(queries, shard_size: int, rules_mode: str) -> list[dict[str, Any]]:
    """Prompt rows as the prompts step writes them (shard folders + _manifest.json); returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qp_core.lake import MANIFEST_NAME, PROMPTS, partition
    from qp_core.nearline.prompts import prefix_hash
    from qp_core.normalize import normalize_query, query_key
    from qp_core.prompt import build_messages, prompt_metadata

    meta = prompt_metadata(rules_mode)
    rows = []
    for i, (q, hist, notes) in enumerate(queries):
        msgs = build_messages(q, hist, notes, rules_mode=rules_mode)
        rows.append({"query_norm": normalize_query(q), "query_key": query_key(q),
                     "messages_json": json.dumps(msgs, ensure_ascii=False, separators=(",", ":")),
                     "prefix_hash": prefix_hash(msgs), "rules_version": meta["rules_version"],
                     "prompt_version": str(meta["prompt_version"]), "reason": "missing", "pos": i})
    part = partition(PROMPTS, DT)
    shards = []
    for s, start in enumerate(range(0, len(rows), shard_size)):
        folder = part / f"shard={s:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        chunk = rows[start : start + shard_size]
        pq.write_table(pa.Table.from_pylist(chunk), str(folder / "part-00000.parquet"))
        shards.append({"shard": f"{s:05d}", "path": f"shard={s:05d}", "rows": len(chunk)})
    (part / MANIFEST_NAME).write_text(json.dumps({"dt": DT, "rows": len(rows), "shards": shards}), encoding="utf-8")
    return rows


def raw_inputs(engine, rows) -> tuple[list, list]:
    """(TokensPrompts, SamplingParams) exactly as the job sends them, built outside the clock."""
    from vllm.inputs import TokensPrompt

    msgs = [json.loads(r["messages_json"]) for r in rows]
    grammars = engine.grammars([r["query_norm"] for r in rows], len(rows))
    prompts = [TokensPrompt(prompt_token_ids=engine.render(m)) for m in msgs]
    params = [engine._sampling_params(engine.settings.max_new_tokens, g) for g in grammars]
    return prompts, params


def timed_raw(engine, prompts, params) -> tuple[float, list[str], int]:
    engine.llm.reset_prefix_cache()
    t = time.perf_counter()
    outs = engine.llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t
    return wall, [o.outputs[0].text for o in outs], sum(len(o.outputs[0].token_ids) for o in outs)


def timed_job(engine, model_dir, feed_rows: int) -> tuple[float, list[str], int]:
    import pyarrow.parquet as pq

    from qp_core.lake import generations_dir
    from qp_core.nearline.generate import run_generation
    from qp_core.nearline.settings import load_generation_settings

    shutil.rmtree(generations_dir(DT, VERSION), ignore_errors=True)
    settings = load_generation_settings().model_copy(update={"engine": engine.settings, "feed_rows": feed_rows})
    engine.llm.reset_prefix_cache()
    t = time.perf_counter()
    run_generation(DT, model_dir, VERSION, settings=settings, engine=engine, progress=False)
    wall = time.perf_counter() - t
    table = pq.read_table(str(generations_dir(DT, VERSION))).sort_by("pos")
    return wall, table.column("text").to_pylist(), sum(table.column("completion_tokens").to_pylist())


def run(model_dir: str, n: int, shard_size: int, max_new_tokens: int, rounds: int, per_shard: bool,
        rules_mode: str) -> dict[str, Any]:
    from qp_core.bench.generate import bench_queries
    from qp_core.engines import engine_settings_for, make_engine
    from qp_core.nearline.settings import load_generation_settings

    base = load_generation_settings()
    eng = engine_settings_for(model_dir, base.engine).model_copy(update={"max_new_tokens": max_new_tokens})
    rows = write_shards(bench_queries(n), shard_size, rules_mode)
    engine = make_engine(model_dir, eng)
    cells: list[dict[str, Any]] = []
    try:
        prompts, params = raw_inputs(engine, rows)
        engine.llm.generate(prompts[:8], params[:8], use_tqdm=False)  # warm-up (kernels, grammar compiler)
        kinds = [("raw", None), ("job", base.feed_rows)] + ([("job_per_shard", 1)] if per_shard else [])
        for rnd in range(rounds):
            for kind, feed in (kinds if rnd % 2 == 0 else kinds[::-1]):
                if kind == "raw":
                    wall, texts, comp = timed_raw(engine, prompts, params)
                else:
                    wall, texts, comp = timed_job(engine, model_dir, feed)
                cells.append({"round": rnd + 1, "kind": kind, "rows": len(texts), "wall_s": round(wall, 3),
                              "generations_per_s": round(len(texts) / wall, 2),
                              "completion_tokens_per_s": round(comp / wall, 1), "texts": texts})
                logging.getLogger(__name__).info("%s", {k: v for k, v in cells[-1].items() if k != "texts"})
    finally:
        engine.close()
    raw_texts = next(c["texts"] for c in cells if c["kind"] == "raw")

    def mean(kind: str) -> float:
        vals = [c["generations_per_s"] for c in cells if c["kind"] == kind]
        return sum(vals) / len(vals) if vals else float("nan")

    summary = {kind: round(mean(kind), 2) for kind, _ in kinds}
    for c in cells:
        c["same_texts"] = round(sum(a == b for a, b in zip(c.pop("texts"), raw_texts)) / max(len(raw_texts), 1), 3)
    return {
        "engine": {k: getattr(eng, k) for k in ("backend", "dtype", "enforce_eager", "max_num_seqs",
                                                 "max_num_batched_tokens", "enable_prefix_caching",
                                                 "structured_output", "query_grammar", "max_new_tokens")},
        "feed_rows": base.feed_rows or 4 * eng.max_num_seqs,  # as VLLMEngine.feed_rows
        "prompts": n, "shard_size": shard_size,
        "rules_mode": rules_mode, "cells": cells, "generations_per_s_mean": summary,
        "job_overhead": round(1 - summary["job"] / summary["raw"], 4),
        "job_per_shard_overhead": round(1 - summary["job_per_shard"] / summary["raw"], 4) if per_shard else None,
        "target_overhead": 0.05, "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Generate job vs raw vLLM ({report['model']})", "",
             f"{report['prompts']} prompts in shards of {report['shard_size']} ({report['rules_mode']} rules), "
             f"engine {report['engine']}, job feed {report['feed_rows']} rows per call.", "",
             "| round | kind | wall s | generations/s | completion tok/s | same texts as raw |",
             "|---:|---|---:|---:|---:|---:|"]
    for c in report["cells"]:
        lines.append(f"| {c['round']} | {c['kind']} | {c['wall_s']} | {c['generations_per_s']} | "
                     f"{c['completion_tokens_per_s']} | {c['same_texts']} |")
    lines += ["", f"Mean generations/s: {report['generations_per_s_mean']}.",
              f"Job overhead vs raw (anchor): {report['job_overhead']:.1%} (target <= 5%)"
              + (f"; fed one shard per call: {report['job_per_shard_overhead']:.1%}."
                 if report["job_per_shard_overhead"] is not None else "."),
              f"Load average at the end: {[round(x, 2) for x in report['loadavg_at_end']]}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="qp_core.bench overhead", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=None)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rules-mode", default="compact")
    p.add_argument("--no-per-shard", action="store_true", help="skip the one-call-per-shard job variant")
    p.add_argument("--out", default=None, help="folder for JSON and Markdown (default $QP_HOME/bench/overhead)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("qp_core.nearline.generate").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from qp_core.bench.generate import _default_model

    saved = os.environ.get("QP_LAKE_ROOT")  # prompts and generations go to a temporary lake; restored after
    with tempfile.TemporaryDirectory(prefix="qp-bench-overhead-") as tmp:
        try:
            model_dir, model = (args.model_dir, "given") if args.model_dir else _default_model(Path(tmp))
            os.environ["QP_LAKE_ROOT"] = str(Path(tmp) / "lake")
            report = run(model_dir, args.n, args.shard_size, args.max_new_tokens, args.rounds,
                         not args.no_per_shard, args.rules_mode)
        finally:
            os.environ.pop("QP_LAKE_ROOT", None) if saved is None else os.environ.update(QP_LAKE_ROOT=saved)
    report.update(model=model, model_dir=model_dir)
    from qp_core import paths

    out = Path(args.out) if args.out else paths.qp_home() / "bench" / "overhead"
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate_overhead.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "generate_overhead.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return report


if __name__ == "__main__":  # vLLM spawns workers: the guard is required
    main(sys.argv[1:])
