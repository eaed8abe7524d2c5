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

The Airflow DAG runs one ``python -m jobs.<stage>`` per task; each calls ``stage_main`` which builds the
same ``ChainContext`` from its arguments, so both paths share this code.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from qp_core import paths
from qp_core.training.config import TrainingSettings, load_training_settings, section_for_profile

logger = logging.getLogger(__name__)

STAGES = ("aux", "base", "sft1", "sft2", "filter", "grpo", "evaluate", "promote")
MODEL_STAGES = ("base", "sft1", "sft2", "grpo")
ROW_NAMES = {
    "legacy": "legacy pipeline",
    "base": "stage 0 (base)",
    "sft1": "stage 1 SFT (unified + λ·aux)",
    "sft2": "stage 2 SFT (recent)",
    "grpo": "stage 3 GRPO",
}
EVAL_ALIASES = {"stage0": "base", "stage1": "sft1", "stage2": "sft2", "stage3": "grpo", "grpo": "grpo"}


@dataclass
class ChainContext:
    settings: TrainingSettings
    run_id: str
    run_dir: Path
    dt: str
    progress: Callable[[str], None] = field(default=lambda msg: logger.info("%s", msg))

    @property
    def profile(self):
        from qp_core.modeling import load_profile

        return load_profile(self.settings.profile)

    @property
    def rules_mode(self) -> str:
        return self.profile.rules_mode

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


# ------------------------------------------------------------------------------------------ context


def training_root() -> Path:
    return paths.qp_home() / "training"


def newest_dt(dataset: str) -> str | None:
    return paths.newest_partition(dataset)


def make_context(
    section: str | None = None,
    *,
    profile: str | None = None,
    run_id: str | None = None,
    dt: str | None = None,
    overrides: dict[str, Any] | None = None,
    fresh: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ChainContext:
    """Settings + run folder (generating the default world first if the lake has none). ``run_id`` defaults
    to ``<section>-<dt>`` so a rerun of the same run resumes."""
    if section is None and profile is not None:
        section = section_for_profile(profile)
    over = dict(overrides or {})
    if profile is not None:
        over.setdefault("profile", profile)
    settings = load_training_settings(section, over)
    ensure_world()  # first: the run id is named after the lake's newest date
    dt = dt or newest_dt("raw/query_log") or newest_dt("raw/annotations") or time.strftime("%Y-%m-%d")
    run_id = run_id or f"{settings.section}-{dt}" + ("" if settings.context else "-noctx")
    run_dir = training_root() / "runs" / run_id
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(settings.model_dump_json(indent=1), encoding="utf-8")
    ctx = ChainContext(settings, run_id, run_dir, dt)
    if progress is not None:
        ctx.progress = progress
    return ctx


def stage_done(ctx: ChainContext, stage: str) -> dict[str, Any] | None:
    path = ctx.stage_dir(stage) / "stage.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _mark_done(ctx: ChainContext, stage: str, info: dict[str, Any]) -> dict[str, Any]:
    d = ctx.stage_dir(stage)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "stage.json"
    existing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    existing.update(info)
    existing.setdefault("stage", stage)
    existing["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    path.write_text(json.dumps(existing, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    return existing


def model_dir(ctx: ChainContext, stage: str) -> Path:
    info = stage_done(ctx, stage)
    if info is None:
        raise RuntimeError(f"stage {stage!r} of run {ctx.run_id} has not finished (run it first)")
    return Path(info["model_dir"])


# -------------------------------------------------------------------------------------------- data


def ensure_world() -> None:
    """Generate the default synthetic world when the lake has no annotations (fresh clone)."""
    if paths.dataset("raw/annotations").exists() and paths.dataset("raw/golden").exists():
        return
    from qp_core import world

    logger.info("no raw/annotations in %s: generating the default world", paths.lake_root())
    world.generate(paths.lake_root())


def training_annotations(ctx: ChainContext) -> list[dict[str, Any]]:
    """Unified annotations, golden queries excluded (defensive: the world keeps them disjoint already)."""
    from qp_core.normalize import normalize_query
    from qp_core.training.data import annotation_rows, read_dataset

    rows = annotation_rows()
    golden = {normalize_query(r["query"]) for r in read_dataset("raw/golden", columns=["query"])}
    return [r for r in rows if normalize_query(r["query"]) not in golden]


# ------------------------------------------------------------------------------------------ stages


def stage_aux(ctx: ChainContext, spark=None) -> dict[str, Any]:
    from qp_core.training.aux import build_aux

    s = ctx.settings
    own = spark is None
    if own:
        from qp_core.spark import get_session

        spark = get_session("qp-aux-data")
    try:
        counts = build_aux(spark, ctx.dt, size=s.aux.size, lookback_days=s.aux.lookback_days,
                           tasks=list(s.tasks), seed=s.seed, min_freq=s.aux.min_freq)
    finally:
        if own:
            spark.stop()
    return {"rows_per_task": counts, "path": str(paths.dataset("training/aux"))}


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
                    callbacks=[_ProgressCallback(ctx, stage, st.max_steps)])
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
    from qp_core.training.report import write_report

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
        row = {"name": ROW_NAMES.get(name, name), "stage": name, **_plain_metrics(results[name])}
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
    notes = _report_notes(ctx, results)
    paths_ = write_report(ctx.run_dir / "report", report_rows, histories=histories, stage_times=times,
                          notes=notes, title=f"Training chain report — run {ctx.run_id} ({s.profile})")
    return {"report": {k: str(v) for k, v in paths_.items()}, "rows": len(report_rows)}


def _serving_uses_query_grammar() -> bool:
    """Whether the nearline engines decode under each query's grammar (``conf/generation.yaml``)."""
    from qp_core.generate import load_generation_settings

    engine = load_generation_settings().engine
    return engine.structured_output and engine.query_grammar


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "served"}


def _report_notes(ctx: ChainContext, results: dict[str, dict[str, Any]]) -> list[str]:
    s = ctx.settings
    notes = [
        f"profile {s.profile} (rules_mode {ctx.rules_mode}), section {s.section}, context {'on' if s.context else 'off'}",
        f"stage 1 mixing: λ = {s.sft1.lambda_aux} as a sampling fraction (aux rows = round(λ·N_unified))",
        f"GRPO: multi_objective_aggregation={s.grpo.multi_objective_aggregation}, β={s.grpo.beta}, "
        f"G={s.grpo.num_generations}, weights={_effective_weights(s)}",
    ]
    filt = stage_done(ctx, "filter")
    if filt:
        sm = filt.get("summary", {})
        notes.append(f"GRPO filter kept {sm.get('kept')}/{sm.get('candidates')} prompts; kept fraction per task "
                     f"{sm.get('kept_fraction_per_task')}")
    order = [n for n in ("base", "sft1", "sft2", "grpo") if n in results]
    for prev, cur in zip(order, order[1:]):
        d = results[cur].get("overall", 0) - results[prev].get("overall", 0)
        verdict = "helps" if d > 0.05 else "does not help" if d < -0.05 else "no measurable change"
        notes.append(f"{ROW_NAMES[cur]} vs {ROW_NAMES[prev]}: Overall {d:+.2f} ({verdict})")
    if "legacy" in results and order:
        last = order[-1]
        d = results[last].get("overall", 0) - results["legacy"].get("overall", 0)
        notes.append(f"final stage vs legacy pipeline: Overall {d:+.2f} (the model's own outputs; invalid = empty)")
        served = results[last].get("served")
        if served:
            d = served.get("overall", 0) - results["legacy"].get("overall", 0)
            notes.append(f"final stage as served vs legacy pipeline: Overall {d:+.2f} — what the nearline would "
                         f"publish: its valid outputs, the legacy answer for the {100 * served['fallback_rate']:.1f}% "
                         f"that fail validation; the promotion gate compares this")
    return notes


def _effective_weights(s: TrainingSettings) -> dict[str, float]:
    if s.grpo.weights:
        return dict(s.grpo.weights)
    from qp_core.rewards import load_reward_settings

    return dict(load_reward_settings().weights)


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
            "data_versions": {"annotations": data_version("raw/annotations"), "golden": data_version("raw/golden"),
                              "aux": data_version("training/aux") if s.sft1.lambda_aux > 0 else "unused",
                              "run_dt": ctx.dt},
        })
        version = record.version
        _mark_done(ctx, "promote", {"version": version, "partial": True})
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
    info = _mark_done(ctx, stage, info)
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


# ------------------------------------------------------------------------------------------ ablations


def run_isolated_ablation(ctx: ChainContext, steps: int | None = None, tasks=("ner", "seg", "tw", "taxonomy")) -> dict[str, Any]:
    """Table 2: one model per sub-task trained on its single-task data only (same base, same step budget)."""
    from qp_core.training.data import golden_rows, task_example
    from qp_core.training.evaluate import evaluate_task_models_separately
    from qp_core.training.sft import train_sft

    s = ctx.settings
    run_stage(ctx, "base")
    anns = training_annotations(ctx)
    st = s.sft1.model_copy(update={"max_steps": steps or s.sft1.max_steps, "lambda_aux": 0.0})
    dirs = {}
    for task in tasks:
        ctx.progress(f"[isolated] training the {task} model ({st.max_steps} steps)")
        res = train_sft(model_dir(ctx, "base"), [task_example(task, r["query"], r["label"]) for r in anns],
                        ctx.run_dir / "isolated" / task, st, bf16=s.bf16, seed=s.seed, threads=s.threads,
                        callbacks=[_ProgressCallback(ctx, f"isolated/{task}", st.max_steps)])
        dirs[task] = res.model_dir
    rows = golden_rows(s.eval.limit, seed=s.seed)
    metrics = evaluate_task_models_separately(dirs, rows, batch_size=s.eval.batch_size,
                                              max_new_tokens=s.eval.max_new_tokens, bf16=s.bf16)
    out = ctx.run_dir / "isolated" / "metrics.json"
    out.write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
    return {"metrics": metrics, "path": str(out)}


def ablation_report(ctx: ChainContext, isolated: dict[str, Any] | None, noctx_ctx: ChainContext | None) -> dict[str, Path]:
    """Table-2-like report: unified (this run's stage 1/2) vs task-isolated vs context off."""
    from qp_core.training.report import write_report

    rows = []
    for name in ("legacy", "sft1", "sft2"):
        p = ctx.stage_dir("evaluate") / f"{name}.json"
        if p.exists():
            rows.append({"name": ROW_NAMES[name] + (" (context on)" if name != "legacy" else ""),
                         **json.loads(p.read_text(encoding="utf-8"))})
    if isolated:
        rows.append({"name": "task-isolated models (Table 2)", **isolated["metrics"]})
    if noctx_ctx is not None:
        for name in ("sft1", "sft2"):
            p = noctx_ctx.stage_dir("evaluate") / f"{name}.json"
            if p.exists():
                rows.append({"name": ROW_NAMES[name] + " (context off)", **json.loads(p.read_text(encoding="utf-8"))})
    return write_report(ctx.run_dir / "ablations", rows, title=f"Ablations — run {ctx.run_id}")


# ------------------------------------------------------------------------------------------ progress


class _ProgressCallback:
    """A transformers TrainerCallback (duck-typed: created lazily so importing this module stays cheap)."""

    def __new__(cls, ctx: ChainContext, stage: str, max_steps: int):
        from transformers import TrainerCallback

        class _CB(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    ctx.progress(f"[{stage}] step {state.global_step}/{max_steps} loss {logs['loss']:.4f}")

        return _CB()


# ------------------------------------------------------------------------------------------ jobs


def stage_argparser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"jobs.{stage}", description=f"Training chain stage {stage!r}.")
    p.add_argument("--section", default=None, help="conf/training.yaml section (default: default_section)")
    p.add_argument("--profile", default=None, help="model profile (picks the section named like it)")
    p.add_argument("--run-id", default=None, help="run folder name (default <section>-<dt>)")
    p.add_argument("--dt", default=None, help="run date YYYY-MM-DD (default: newest raw/query_log partition)")
    p.add_argument("--rerun", action="store_true", help="run again even if the stage finished")
    p.add_argument("--no-context", action="store_true", help="ablation: prompts without history/notes")
    return p


def stage_main(stage: str, argv: list[str] | None = None, **stage_kwargs: Any) -> dict[str, Any]:
    """Entry point of ``jobs/<stage>.py``: one stage of one run, resumable, JSON summary on stdout."""
    from qp_core.spark import setup_job_logging

    setup_job_logging()
    args = stage_argparser(stage).parse_args(argv)
    ctx = make_context(args.section, profile=args.profile, run_id=args.run_id, dt=args.dt,
                       overrides={"context": False} if args.no_context else None,
                       progress=lambda m: logger.info("%s", m))
    info = run_stage(ctx, stage, rerun=args.rerun, **stage_kwargs)
    print(json.dumps({"run_id": ctx.run_id, "run_dir": str(ctx.run_dir), "stage": stage, **info},
                     ensure_ascii=False, default=str))
    return info
