"""Benchmark: generations/s and tokens/s of the vLLM engine with prefix caching on vs off, on real prompts.

    python -m qp_core.bench.generate --n 128 --modes compact,full [--model-dir DIR] [--out bench.json]
    python -m qp_core.bench.generate --caching off --decodings schema,query   # cost of per-query grammars

Prompts are ``qp_core.prompt.build_messages`` for synthetic queries (with rewrite history and candidate notes
unless ``--no-context``), in the compact and/or full rules rendering, so the shared system prefix is exactly
what production sends. One engine per caching setting (vLLM fixes it at start); inside an engine each rules
mode gets a short warm-up (excluded from timing) and then one timed batch. Greedy decoding, so both settings
produce the same tokens and the comparison is like for like. The model defaults to the registry's
production model, else a freshly created random-init tiny model (say which in the report: a random model's
answers are longer than a trained one's). ``--decodings`` times each batch under the static JSON schema
and/or each query's own grammar (``qp_core.grammar``) in the same engine; compare them with caching off, or
the second decoding finds the first one's prompts cached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_BRANDS = ["雅诗兰黛", "兰蔻", "华为", "小米", "优衣库", "海底捞", "耐克", "新百伦", "迪奥", "苹果", "始祖鸟", "宜家"]
_THINGS = ["粉底液", "精华", "手机", "冲锋衣", "火锅", "跑鞋", "口红", "电脑", "沙发", "t恤", "耳机", "面霜"]
_TAILS = ["推荐", "测评", "怎么样", "平替", "色号", "价格", "攻略", "哪款好", "", "学生党", "2024新款", "真假"]


def bench_queries(n: int) -> list[tuple[str, list[str], list[str]]]:
    """``n`` distinct (query, history, notes) triples, deterministic."""
    out = []
    i = 0
    while len(out) < n:
        b, t, tail = _BRANDS[i % 12], _THINGS[(i // 12) % 12], _TAILS[(i // 144 + i) % 12]
        q = f"{b}{t}{tail} {i}" if i >= 1728 else f"{b}{t}{tail}"
        hist = [f"{b}{t}", f"{b} {tail or '推荐'}"]
        notes = [f"{b}{t}真实测评｜用了一个月说说感受：质地、价格、适合人群都讲清楚了 #{t} #{b}",
                 f"{t}怎么选？{tail or '入门'}必看清单，附上{b}和同价位几款的对比",
                 f"被问爆的{b}{t}，{tail or '新手'}也能闭眼入，附使用技巧"]
        out.append((q, hist, notes))
        i += 1
    return out


def _default_model(tmp: Path) -> tuple[str, str]:
    try:
        from qp_core import registry

        rec = registry.production()
        if rec is not None:
            return rec.path, f"registry production {rec.version}"
    except Exception as exc:  # the registry may not exist on a fresh machine
        logger.info("no registry model (%s)", exc)
    from qp_core.training import modeling

    texts = [q for q, h, n in bench_queries(500)] + [x for _, h, n in bench_queries(200) for x in h + n]
    path = modeling.create_base_model("tiny", texts, tmp / "tiny-random", seed=0)
    return str(path), "random-init tiny (created for the benchmark)"


def run_bench(model_dir: str, n: int, modes: list[str], max_new_tokens: int, context: bool,
              caching: list[bool], structured: bool = True, backend: str = "vllm",
              decodings: tuple[str, ...] = ("schema",)) -> list[dict[str, Any]]:
    from qp_core.engines import engine_settings_for, make_engine
    from qp_core.nearline.settings import load_generation_settings
    from qp_core.prompt import build_messages

    triples = bench_queries(n + 4)
    rows: list[dict[str, Any]] = []
    base = load_generation_settings().engine
    for cache in caching:
        settings = engine_settings_for(model_dir, base)
        settings = settings.model_copy(update=dict(backend=backend, enable_prefix_caching=cache, structured_output=structured,
                                                   max_new_tokens=max_new_tokens, max_prompt_tokens=7000,
                                                   max_model_len=max(settings.max_model_len, 8192)))
        started = time.perf_counter()
        engine = make_engine(model_dir, settings)
        start_s = time.perf_counter() - started
        try:
            for mode in modes:
                msgs = [build_messages(q, h if context else (), nt if context else (), rules_mode=mode)
                        for q, h, nt in triples]
                engine.generate(msgs[:4])  # warm-up: kernels, and (with caching) the shared prefix
                timed = msgs[4:]
                for decoding in decodings:
                    queries = [q for q, _, _ in triples[4:]] if decoding == "query" else None
                    t0 = time.perf_counter()
                    gens = engine.generate(timed, queries=queries)
                    wall = time.perf_counter() - t0
                    rows.append(_row(backend, mode, cache, decoding, start_s, wall, gens, triples[4:]))
                    logger.info("bench %s", rows[-1])
        finally:
            engine.close()
    return rows


def _row(backend, mode, cache, decoding, start_s, wall, gens, triples) -> dict[str, Any]:
    from qp_core.parse import parse_output

    ok = [g for g in gens if g.error is None]
    prompt_tok = sum(g.prompt_tokens for g in ok)
    comp_tok = sum(g.completion_tokens for g in ok)
    valid = sum(parse_output(g.text, q).result is not None for g, (q, _, _) in zip(gens, triples))
    return {
        "backend": backend, "rules_mode": mode, "prefix_caching": cache, "decoding": decoding,
        "prompts": len(gens), "errors": len(gens) - len(ok),
        "engine_start_s": round(start_s, 1), "wall_s": round(wall, 2),
        "generations_per_s": round(len(ok) / wall, 2),
        "completion_tokens_per_s": round(comp_tok / wall, 1),
        "total_tokens_per_s": round((prompt_tok + comp_tok) / wall, 1),
        "prompt_tokens_mean": round(prompt_tok / max(len(ok), 1), 1),
        "completion_tokens_mean": round(comp_tok / max(len(ok), 1), 1),
        "valid_rate": round(valid / max(len(gens), 1), 3),
    }


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for mode in {r["rules_mode"] for r in rows}:
        on = [r for r in rows if r["rules_mode"] == mode and r["prefix_caching"] and r["decoding"] == "schema"]
        off = [r for r in rows if r["rules_mode"] == mode and not r["prefix_caching"] and r["decoding"] == "schema"]
        if on and off and off[0]["generations_per_s"]:
            out[mode] = round(on[0]["generations_per_s"] / off[0]["generations_per_s"], 2)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="qp_core.bench.generate", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=None)
    p.add_argument("--n", type=int, default=128, help="timed prompts per (mode, caching) cell")
    p.add_argument("--modes", default="compact,full")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-context", action="store_true", help="query only: no history/notes in the user message")
    p.add_argument("--caching", default="on,off", help="which prefix-caching settings to run")
    p.add_argument("--no-structured", action="store_true")
    p.add_argument("--decodings", default="schema", help="schema (static JSON schema) and/or query (per-query grammar)")
    p.add_argument("--backend", choices=["vllm", "hf"], default="vllm",
                   help="hf: the transformers fallback (no prefix caching; constrained only with --decodings query)")
    p.add_argument("--out", default=None, help="write the report JSON here")
    args = p.parse_args(argv)
    from qp_core.ops.process import LOG_FORMAT, apply_env_defaults

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    apply_env_defaults(OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="qp-bench-") as tmp:
        model_dir, model_desc = (args.model_dir, "given") if args.model_dir else _default_model(Path(tmp))
        rows = run_bench(model_dir, args.n, [m for m in args.modes.split(",") if m], args.max_new_tokens,
                         not args.no_context, [c == "on" for c in args.caching.split(",") if c],
                         structured=not args.no_structured, backend=args.backend,
                         decodings=tuple(d for d in args.decodings.split(",") if d))
    report = {"model_dir": model_dir, "model": model_desc, "cells": rows, "speedup_on_vs_off": speedups(rows),
              "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg()}
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vLLM generation, {model_desc}")
    for col in ("rules_mode", "prefix_caching", "decoding", "prompts", "prompt_tokens_mean", "completion_tokens_mean",
                "wall_s", "generations_per_s", "completion_tokens_per_s", "total_tokens_per_s", "valid_rate"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in table.columns and [c.header for c in table.columns]))
    Console(stderr=True).print(table)
    text = json.dumps(report, ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":  # vLLM spawns workers: the guard is required
    main(sys.argv[1:])
