"""The training chain, stage by stage (paper Figure 1 / §4.3), callable in-process or one stage per process.

Stages, in order (each writes ``<run_dir>/<stage>/stage.json`` when done, so a rerun skips finished stages
and an interrupted SFT/GRPO stage resumes from its newest ``checkpoint-*``):

``aux``      Spark: legacy pseudo-labels on the query pool → ``training/aux/task=<t>``
``base``     stage 0: tokenizer + tiny model (``create`` profiles) / dequantised GGUF / pretrained path
``sft1``     unified annotations (full prompts, context) + λ·aux, completion-only loss
``sft2``     most recent annotations only, from stage 1
``filter``   G rollouts per prompt from stage 2; keep prompts that vary on exactly one sub-task
``grpo``     multi-reward GRPO from (and KL-anchored to) stage 2 on the filtered prompts
``evaluate`` every stage + both legacy rows on golden (report) and dev (gate) → report.json / report.md
``promote``  register the best stage on dev; promote it if the gate passes on dev (``training.assess``)

The Airflow DAG runs one ``python -m jobs.<stage>`` per task; each calls ``jobs._chain.stage_main`` which
builds the same ``ChainContext`` (:mod:`qp_core.training.run`) from its arguments, so both paths share this
code. Report prose lives in :mod:`qp_core.training.report`, ablations in :mod:`qp_core.training.ablation`,
the evaluate and promote stages in :mod:`qp_core.training.assess`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from qp_core.lake import AUX, dataset
from qp_core.training.callbacks import ProgressCallback
from qp_core.training.config import TrainingSettings
from qp_core.training.assess import stage_evaluate, stage_promote
from qp_core.training.run import STAGES, ChainContext, mark_done, model_dir, stage_done, training_annotations

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ stages


def stage_aux(ctx: ChainContext, spark=None) -> dict[str, Any]:
    from qp_core.training.aux import build_aux

    s = ctx.settings
    own = spark is None
    if own:
        from qp_core.ops.spark import get_session

        spark = get_session("qp-aux-data")
    try:
        counts = build_aux(spark, ctx.dt, size=s.aux.size, lookback_days=s.aux.lookback_days,
                           tasks=list(s.tasks), seed=s.seed, min_freq=s.aux.min_freq)
    finally:
        if own:
            spark.stop()
    return {"rows_per_task": counts, "path": str(dataset(AUX))}


def stage_base(ctx: ChainContext) -> dict[str, Any]:
    from qp_core.training.base import prepare_base

    out = ctx.stage_dir("base") / "model"
    texts_fn = lambda: __import__("qp_core.training.data", fromlist=["corpus_texts"]).corpus_texts(  # noqa: E731
        training_annotations(ctx), ctx.rules_mode)
    path = prepare_base(ctx.profile, out, texts_fn, seed=ctx.settings.seed)
    return {"model_dir": str(path)}


def _sft(ctx: ChainContext, stage: str, init: Path, examples: list[dict[str, Any]], st) -> dict[str, Any]:
    from qp_core.training.sft import train_sft

    s = ctx.settings
    res = train_sft(init, examples, ctx.stage_dir(stage), st, bf16=s.bf16, seed=s.seed, threads=s.threads,
                    callbacks=[ProgressCallback(ctx, stage, st.max_steps)])
    return {"model_dir": str(res.model_dir), "wall_train_s": round(res.wall_s, 1), **res.extra}


def sft1_examples(ctx: ChainContext, rows: list[dict[str, Any]],
                  aux: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Stage 1's training mix: unified examples of ``rows`` (the run's prompt and context) + λ·N of ``aux``."""
    from qp_core.training.data import mix_aux, unified_example

    s = ctx.settings
    unified = [unified_example(r, ctx.rules_mode, s.context) for r in rows]
    return mix_aux(unified, aux, s.sft1.lambda_aux, seed=s.seed)


def stage_sft1(ctx: ChainContext) -> dict[str, Any]:
    from qp_core.training.data import stage1_aux

    s = ctx.settings
    examples = sft1_examples(ctx, training_annotations(ctx), stage1_aux(s.sft1.lambda_aux))
    n_aux = sum(1 for e in examples if e["source"].startswith("aux"))
    info = _sft(ctx, "sft1", model_dir(ctx, "base"), examples, s.sft1)
    info.update(unified_rows=len(examples) - n_aux, aux_rows=n_aux, lambda_aux=s.sft1.lambda_aux)
    return info


def stage_sft2(ctx: ChainContext) -> dict[str, Any]:
    from qp_core.training.data import recent_rows, unified_example

    s = ctx.settings
    rows = recent_rows(training_annotations(ctx), s.sft2.recent_days)
    examples = [unified_example(r, ctx.rules_mode, s.context) for r in rows]
    dts = sorted({r["dt"] for r in rows if r.get("dt")})
    info = _sft(ctx, "sft2", model_dir(ctx, "sft1"), examples, s.sft2)
    info.update(rows=len(rows), dt_from=dts[0] if dts else None, dt_to=dts[-1] if dts else None)
    return info


def stage_filter(ctx: ChainContext) -> dict[str, Any]:
    from qp_core.training.grpo_filter import filter_prompts, sample_candidates

    s, f = ctx.settings, ctx.settings.filter
    cands = sample_candidates(training_annotations(ctx), f.num_prompts, seed=s.seed)
    kept, summary = filter_prompts(
        model_dir(ctx, "sft2"), cands, rules_mode=ctx.rules_mode, context=s.context,
        num_generations=f.num_generations, temperature=f.temperature, top_p=f.top_p,
        max_new_tokens=f.max_new_tokens, batch_size=f.batch_size, vary_threshold=f.vary_threshold,
        consistency_eps=f.consistency_eps, bf16=s.bf16, seed=s.seed, query_grammar=f.query_grammar,
    )
    out = ctx.stage_dir("filter")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "kept.jsonl", "w", encoding="utf-8") as fh:
        for r in kept:
            fh.write(json.dumps({k: r[k] for k in ("query", "label", "history", "notes", "target", "rollout_rewards")
                                 if k in r}, ensure_ascii=False, default=list) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    ctx.progress(f"filter: kept {summary['kept']}/{summary['candidates']} "
                 f"per task {summary['kept_fraction_per_task']}")
    return {"summary": summary, "kept_path": str(out / "kept.jsonl")}


def stage_grpo(ctx: ChainContext) -> dict[str, Any]:
    from qp_core.training.grpo import train_grpo

    s = ctx.settings
    kept_path = ctx.stage_dir("filter") / "kept.jsonl"
    if stage_done(ctx, "filter") is None:
        raise RuntimeError("run the filter stage first")
    rows = [json.loads(line) for line in kept_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    res = train_grpo(model_dir(ctx, "sft2"), rows, ctx.stage_dir("grpo"), s.grpo, rules_mode=ctx.rules_mode,
                     context=s.context, bf16=s.bf16, seed=s.seed, threads=s.threads)
    return {"model_dir": str(res.model_dir), "wall_train_s": round(res.wall_s, 1), **res.extra}


STAGE_FUNCS: dict[str, Callable[..., dict[str, Any]]] = {
    "aux": stage_aux, "base": stage_base, "sft1": stage_sft1, "sft2": stage_sft2, "filter": stage_filter,
    "grpo": stage_grpo, "evaluate": stage_evaluate, "promote": stage_promote,
}


def run_stage(ctx: ChainContext, stage: str, *, rerun: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Run one stage unless it already finished (``rerun`` forces evaluate/promote-like stages to run again)."""
    if stage not in STAGE_FUNCS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    done = stage_done(ctx, stage)
    if done is not None and not done.get("partial") and not rerun:
        ctx.progress(f"[{stage}] already done ({done.get('wall_s', 0):.0f}s) — skipped")
        return done
    ctx.progress(f"[{stage}] start")
    from qp_core.training.sft import setup_torch

    setup_torch(ctx.settings.threads)
    t0 = time.time()
    info = STAGE_FUNCS[stage](ctx, **kwargs)
    info["wall_s"] = round(time.time() - t0, 1)
    info = mark_done(ctx, stage, info)
    ctx.progress(f"[{stage}] done in {info['wall_s']:.1f}s (peak RSS {info['peak_rss_mib']:.0f} MiB)")
    return info


def default_stages(settings: TrainingSettings) -> list[str]:
    stages = list(STAGES)
    if settings.sft1.lambda_aux <= 0:
        stages.remove("aux")
    if settings.grpo.max_steps <= 0:
        stages.remove("filter")
        stages.remove("grpo")
    return stages


def run_chain(ctx: ChainContext, stages: list[str] | None = None, **stage_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run ``stages`` (default: all that the settings need) in order; returns each stage's info."""
    out: dict[str, Any] = {}
    for stage in stages or default_stages(ctx.settings):
        out[stage] = run_stage(ctx, stage, **stage_kwargs.get(stage, {}))
    return out
