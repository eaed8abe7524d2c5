"""The training chain, stage by stage (paper Figure 1 / §4.3), callable in-process or one stage per process.

Stages, in order (each writes ``<run_dir>/<stage>/stage.json`` when done, so a rerun skips finished stages
and an interrupted SFT/GRPO stage resumes from its newest ``checkpoint-*``):

``aux``      Spark: legacy pseudo-labels on the query pool → ``training/aux/task=<t>``
``base``     stage 0: tokenizer + tiny model (``create`` profiles) / dequantised GGUF / pretrained path
``sft1``     unified annotations (full prompts, context) + λ·aux, completion-only loss
``sft2``     most recent annotations only, from stage 1
``filter``   G rollouts per prompt from stage 2; keep prompts that vary on exactly one sub-task
``grpo``     multi-reward GRPO from (and KL-anchored to) stage 2 on the filtered prompts
``evaluate`` every stage + the legacy baseline on the golden set → report.json / report.md / PNGs
``promote``  register the candidate with its versions and metrics; promote if the gate passes

The Airflow DAG runs one ``python -m jobs.<stage>`` per task; each calls ``jobs._chain.stage_main`` which
builds the same ``ChainContext`` (:mod:`qp_core.training.run`) from its arguments, so both paths share this
code. Report prose lives in :mod:`qp_core.training.report`, ablations in :mod:`qp_core.training.ablation`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from qp_core.lake import ANNOTATIONS, AUX, GOLDEN, dataset
from qp_core.training.callbacks import ProgressCallback
from qp_core.training.config import TrainingSettings
from qp_core.training.report import ROW_NAMES, plain_metrics, report_notes, write_report
from qp_core.training.run import (EVAL_ALIASES, STAGES, ChainContext, mark_done, model_dir, stage_done,
                                  training_annotations)

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


def stage_sft1(ctx: ChainContext) -> dict[str, Any]:
    from qp_core.training.data import aux_examples_by_task, mix_aux, unified_example

    s = ctx.settings
    unified = [unified_example(r, ctx.rules_mode, s.context) for r in training_annotations(ctx)]
    aux = aux_examples_by_task() if s.sft1.lambda_aux > 0 else {}
    if s.sft1.lambda_aux > 0 and not aux:
        raise RuntimeError("λ > 0 but training/aux is empty: run the aux stage first")
    examples = mix_aux(unified, aux, s.sft1.lambda_aux, seed=s.seed)
    n_aux = sum(1 for e in examples if e["source"].startswith("aux"))
    info = _sft(ctx, "sft1", model_dir(ctx, "base"), examples, s.sft1)
    info.update(unified_rows=len(unified), aux_rows=n_aux, lambda_aux=s.sft1.lambda_aux)
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
        consistency_eps=f.consistency_eps, bf16=s.bf16, seed=s.seed,
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


def _eval_stage_names(ctx: ChainContext, include_base: bool = False) -> list[str]:
    names = [EVAL_ALIASES.get(n, n) for n in ctx.settings.eval.stages]
    if include_base and "base" not in names:
        names.insert(0, "base")
    return [n for n in names if stage_done(ctx, n) is not None]


def stage_evaluate(ctx: ChainContext, include_base: bool = False, legacy: bool = True) -> dict[str, Any]:
    """Metrics per finished model stage + legacy (cached per model in ``evaluate/<name>.json``); writes the report."""
    from qp_core.training.data import golden_rows
    from qp_core.training.evaluate import evaluate_legacy, evaluate_model

    s = ctx.settings
    t_eval = time.time()
    out = ctx.stage_dir("evaluate")
    out.mkdir(parents=True, exist_ok=True)
    rows = golden_rows(s.eval.limit, seed=s.seed)
    results: dict[str, dict[str, Any]] = {}
    names = (["legacy"] if legacy else []) + _eval_stage_names(ctx, include_base)
    fallback = None
    if legacy:
        from qp_core.legacy import load_or_train

        fallback = load_or_train()  # the pipeline the nearline validate job falls back to
    for name in names:
        cache = out / f"{name}.json"
        skipped = (stage_done(ctx, name) or {}).get("skipped")
        if skipped and name == "grpo" and "sft2" in results:
            results[name] = {**results["sft2"], "note": f"GRPO skipped ({skipped}): stage-2 model"}
            continue
        if cache.exists():
            results[name] = json.loads(cache.read_text(encoding="utf-8"))
            continue
        ctx.progress(f"evaluate: {name} on {len(rows)} golden rows")
        if name == "legacy":
            metrics = evaluate_legacy(rows, fallback)
        else:
            metrics = evaluate_model(model_dir(ctx, name), rows, rules_mode=ctx.rules_mode, context=s.context,
                                     batch_size=s.eval.batch_size, max_new_tokens=s.eval.max_new_tokens,
                                     bf16=s.bf16, samples_path=out / f"{name}.samples.jsonl", fallback=fallback,
                                     query_grammar=_serving_uses_query_grammar(),
                                     free_valid_rate=s.eval.free_valid_rate)
        cache.write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
        results[name] = metrics
        ctx.progress(f"evaluate: {name} overall {metrics.get('overall', 0):.2f}")
    report_rows, histories, times = [], {}, {}
    for name in names:
        info = stage_done(ctx, name) or {}
        row = {"name": ROW_NAMES.get(name, name), "stage": name, **plain_metrics(results[name])}
        if info.get("wall_s") is not None:
            row["stage_wall_s"] = info["wall_s"]
        report_rows.append(row)
        if results[name].get("served", {}).get("fallback_rate"):  # identical to the row above when 0
            report_rows.append({"name": f"{row['name']} as served (legacy fallback on invalid)",
                                "stage": f"{name}+fallback", **results[name]["served"]})
    for stage in STAGES:
        info = stage_done(ctx, stage)
        if info and info.get("wall_s") is not None:
            times[stage] = float(info["wall_s"])
        hist = ctx.stage_dir(stage) / "log_history.json"
        if stage in ("sft1", "sft2", "grpo") and hist.exists():
            histories[ROW_NAMES[stage]] = json.loads(hist.read_text(encoding="utf-8"))
    if "evaluate" not in times:
        times["evaluate"] = round(time.time() - t_eval, 1)
    notes = report_notes(ctx, results)
    paths_ = write_report(ctx.run_dir / "report", report_rows, histories=histories, stage_times=times,
                          notes=notes, title=f"Training chain report — run {ctx.run_id} ({s.profile})")
    return {"report": {k: str(v) for k, v in paths_.items()}, "rows": len(report_rows)}


def _serving_uses_query_grammar() -> bool:
    """Whether the nearline engines decode under each query's grammar (``conf/generation.yaml``)."""
    from qp_core.nearline.settings import load_generation_settings

    engine = load_generation_settings().engine
    return engine.structured_output and engine.query_grammar


def candidate_stage(ctx: ChainContext) -> str:
    """The final model stage that finished (GRPO when it trained, else stage 2, ...)."""
    for stage in ("grpo", "sft2", "sft1", "base"):
        info = stage_done(ctx, stage)
        if info and not info.get("skipped"):
            return stage
    raise RuntimeError("no trained model stage in this run")


def stage_promote(ctx: ChainContext, force: bool = False) -> dict[str, Any]:
    from qp_core import registry
    from qp_core.prompt import PROMPT_VERSION
    from qp_core.rules import rules_version
    from qp_core.training.data import data_version

    s = ctx.settings
    stage = candidate_stage(ctx)
    metrics_path = ctx.stage_dir("evaluate") / f"{stage}.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
    if not metrics:
        raise RuntimeError(f"no evaluation of {stage}: run the evaluate stage first")
    info = stage_done(ctx, "promote") or {}
    if info.get("version"):
        version = info["version"]
    else:
        record = registry.register(model_dir(ctx, stage), {
            "profile": s.profile, "rules_mode": ctx.rules_mode, "rules_version": rules_version(),
            "prompt_version": PROMPT_VERSION, "stage": stage, "metrics": metrics, "run_id": ctx.run_id,
            "context": s.context, "section": s.section,
            "data_versions": {"annotations": data_version(ANNOTATIONS), "golden": data_version(GOLDEN),
                              "aux": data_version(AUX) if s.sft1.lambda_aux > 0 else "unused",
                              "run_dt": ctx.dt},
        })
        version = record.version
        mark_done(ctx, "promote", {"version": version, "partial": True})
    try:
        legacy_path = ctx.stage_dir("evaluate") / "legacy.json"
        baseline = json.loads(legacy_path.read_text(encoding="utf-8")) if legacy_path.exists() else None
        decision = registry.promote(version, force=force, settings=s.gate, baseline=baseline)
        promoted, reasons = True, decision.reasons
    except registry.RegistryError as exc:
        promoted, reasons = False, [str(exc)]
    ctx.progress(f"promote: {version} {'PROMOTED' if promoted else 'not promoted'} ({'; '.join(reasons)})")
    return {"version": version, "stage": stage, "promoted": promoted, "gate": reasons, "partial": False}


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
