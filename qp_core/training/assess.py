"""What the chain's evaluate and promote stages conclude, and how honestly: baselines, splits, intervals.

* Two legacy rows in every report: ``legacy_refit`` — the legacy pipeline refitted on exactly the model's
  training annotations (the fair baseline: same data, other method), listed first; and ``legacy`` — the
  stale snapshot the nearline fallback serves (what a promotion replaces).
* Golden is for the report only; the reserved dev split (``data.split_dev``) is what the promotion gate and
  the choice of the promoted stage look at, so that the reported numbers were not used to pick the model.
* Every comparison is a paired bootstrap over the same rows (``compare.paired_bootstrap``) with a 95%
  interval, and a verdict only where it excludes zero; per slice (ambiguous / new word / rest) and
  re-weighted to live traffic.

The chain's ``evaluate`` and ``promote`` stages live here (``stage_evaluate``, ``stage_promote``); the
helpers above them take plain inputs (rows, metric dicts, callables) and are tested on constructed ones.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qp_core.training.report import ROW_NAMES as NAMES
from qp_core.training.report import plain_metrics, report_notes, write_report
from qp_core.training.run import STAGES, ChainContext, dev_annotations, model_dir, stage_done, training_annotations
from qp_core.training.compare import (
    KEYS,
    SLICES,
    TRAFFIC,
    fmt_interval,
    paired_bootstrap,
    slice_masks,
    slice_scores,
    slice_shares,
    snapshot_vocabulary,
)

logger = logging.getLogger(__name__)

LEGACY_REFIT = "legacy_refit"
LEGACY_SNAPSHOT = "legacy"
MODEL_ORDER = ("base", "sft1", "sft2", "grpo")
SHORT = {"overall": "Overall", "ner_f1": "NER", "seg_f1": "Seg", "tw_f1": "TW", "taxonomy": "Taxonomy"}


# ------------------------------------------------------------------------------------------ evaluation


def evaluate_cached(out_dir: Path, systems: Mapping[str, Callable[[], dict[str, Any]]],
                    progress: Callable[[str], None] = logger.info) -> dict[str, dict[str, Any]]:
    """Run each system's evaluation once: ``<out_dir>/<name>.json`` caches it (written atomically)."""
    from qp_core.training.state import read_json_marker, write_json_atomic

    out: dict[str, dict[str, Any]] = {}
    for name, run in systems.items():
        cache = out_dir / f"{name}.json"
        cached = read_json_marker(cache)
        if cached is not None and "per_row" in cached:
            out[name] = cached
            continue
        progress(f"evaluate: {name} on {out_dir.name}")
        metrics = run()
        write_json_atomic(cache, metrics)
        out[name] = metrics
        progress(f"evaluate: {name} on {out_dir.name}: overall {metrics.get('overall', 0):.2f} "
                 f"({metrics.get('eval_s', 0)} s, n={metrics.get('n')})")
    return out


def slice_setup(golden: Sequence[Mapping[str, Any]], snapshot_rows: Sequence[Mapping[str, Any]],
                traffic_queries: Sequence[str], labeller) -> tuple[dict[str, Any], dict[str, float]]:
    """Golden slice masks and the slices' traffic shares.

    ``snapshot_rows``: the annotation rows the legacy snapshot was fitted on (defines "new word").
    ``traffic_queries``: a draw from the query log; ``labeller`` (the refitted legacy, Seg 100 on golden)
    segments them, since log queries carry no labels.
    """
    vocab = snapshot_vocabulary(snapshot_rows)
    masks = slice_masks(golden, vocab)
    shares: dict[str, float] = {}
    if traffic_queries:
        preds = labeller.predict_batch(list(traffic_queries))
        shares = slice_shares([{"query": q, "label": p} for q, p in zip(traffic_queries, preds) if p], vocab)
    return masks, shares


def served(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """What downstream reads: the model's valid outputs with the legacy fallback elsewhere (when evaluated)."""
    return metrics.get("served") or metrics


# --------------------------------------------------------------------------------------- comparisons


def compare(a: Mapping[str, Any], b: Mapping[str, Any], *, masks=None, shares=None, seed: int = 0,
            draws: int = 1000) -> dict[str, Any]:
    return paired_bootstrap(a["per_row"], b["per_row"], masks=masks, shares=shares, seed=seed, draws=draws)


def comparison_pairs(present: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) pairs the report compares: each model stage vs both legacy rows, each stage vs the previous."""
    stages = [s for s in MODEL_ORDER if s in present]
    pairs = []
    for s in stages:
        for base in (LEGACY_REFIT, LEGACY_SNAPSHOT):
            if base in present:
                pairs.append((s, base))
    pairs += list(zip(stages[1:], stages))
    return pairs


def comparison_rows(results: Mapping[str, Mapping[str, Any]], pairs: Sequence[tuple[str, str]], *, masks=None,
                    shares=None, seed: int = 0) -> list[dict[str, Any]]:
    """One row per comparison: Δ with 95% interval per metric, per slice and traffic-weighted."""
    rows = []
    for a, b in pairs:
        cmp = compare(results[a], results[b], masks=masks, shares=shares, seed=seed)
        row: dict[str, Any] = {"a": a, "b": b, "name": f"{NAMES.get(a, a)} − {NAMES.get(b, b)}", "n": cmp["n"],
                               "verdict": cmp["all"]["overall"]["verdict"], "intervals": cmp}
        for key in KEYS:
            row[SHORT[key]] = fmt_interval(cmp["all"][key])
        for s in (*SLICES, TRAFFIC):
            if s in cmp:
                row[f"Overall {s}"] = fmt_interval(cmp[s]["overall"])
        rows.append(row)
    return rows


def slice_rows(results: Mapping[str, Mapping[str, Any]], order: Sequence[str], masks, shares) -> list[dict[str, Any]]:
    rows = []
    for name in order:
        if name not in results:
            continue
        sc = slice_scores(results[name]["per_row"], masks, shares)
        row: dict[str, Any] = {"name": NAMES.get(name, name)}
        for s in SLICES:
            row[f"{s} (n={sc[s]['n']})"] = sc[s].get("overall")
        row["traffic-weighted Overall"] = sc.get(TRAFFIC)
        row["Overall (golden mix)"] = results[name].get("overall")
        rows.append(row)
    return rows


def best_stage(dev: Mapping[str, Mapping[str, Any]], stages: Sequence[str], seed: int = 0) -> tuple[str, list[str]]:
    """The stage with the highest served Overall on dev; the notes give each stage's paired interval
    against it, so "the last stage" is promoted only when dev says it is the best one."""
    cands = [s for s in stages if s in dev]
    if not cands:
        raise ValueError("no evaluated model stage on the dev split")
    best = max(cands, key=lambda s: (served(dev[s]).get("overall", 0.0), MODEL_ORDER.index(s)))
    notes = []
    for s in cands:
        if s == best:
            continue
        cmp = compare(served(dev[s]), served(dev[best]), seed=seed)
        notes.append(f"dev: {NAMES.get(s, s)} − {NAMES.get(best, best)}: Overall {fmt_interval(cmp['all']['overall'])}")
    return best, notes



def dump(path: Path, data: Any) -> None:
    from qp_core.training.state import write_json_atomic

    write_json_atomic(path, data)


# ------------------------------------------------------------------------------------ the evaluate stage


def eval_stage_names(ctx: ChainContext, include_base: bool = False) -> list[str]:
    from qp_core.training.run import EVAL_ALIASES

    names = [EVAL_ALIASES.get(n, n) for n in ctx.settings.eval.stages]
    if include_base and "base" not in names:
        names.insert(0, "base")
    return [n for n in names if stage_done(ctx, n) is not None]


def serving_uses_query_grammar() -> bool:
    """Whether the nearline engines decode under each query's grammar (``conf/generation.yaml``)."""
    from qp_core.nearline.settings import load_generation_settings

    engine = load_generation_settings().engine
    return engine.structured_output and engine.query_grammar


def stage_evaluate(ctx: ChainContext, include_base: bool = False, legacy: bool = True) -> dict[str, Any]:
    """Every finished model stage and both legacy rows on golden (the report) and on dev (gate, stage
    choice), cached per split and system in ``evaluate/<split>/<name>.json`` with per-row counts."""
    from qp_core.legacy import load_or_train
    from qp_core.training.data import golden_rows
    from qp_core.training.evaluate import evaluate_legacy, evaluate_model, refitted_legacy

    s = ctx.settings
    t_eval = time.time()
    out = ctx.stage_dir("evaluate")
    golden = golden_rows(s.eval.limit, seed=s.seed)
    snapshot = load_or_train()  # the pipeline the nearline validate job falls back to
    refit = refitted_legacy(training_annotations(ctx)) if legacy else None
    grammar = serving_uses_query_grammar()

    def model_run(name: str, rows: list[dict[str, Any]], split: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            skipped = (stage_done(ctx, name) or {}).get("skipped")
            src = "sft2" if skipped and name == "grpo" else name  # GRPO kept no prompt: stage 2 carries on
            m = evaluate_model(model_dir(ctx, src), rows, rules_mode=ctx.rules_mode, context=s.context,
                               batch_size=s.eval.batch_size, max_new_tokens=s.eval.max_new_tokens, bf16=s.bf16,
                               samples_path=out / split / f"{name}.samples.jsonl", fallback=snapshot,
                               query_grammar=grammar, free_valid_rate=s.eval.free_valid_rate and split == "golden")
            if src != name:
                m["note"] = f"GRPO skipped ({skipped}): stage-2 model"
            return m
        return run

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for split, rows in (("golden", golden), ("dev", dev_annotations(ctx))):
        systems: dict[str, Callable[[], dict[str, Any]]] = {}
        if legacy:
            systems[LEGACY_REFIT] = lambda rows=rows: evaluate_legacy(rows, refit)
            systems[LEGACY_SNAPSHOT] = lambda rows=rows: evaluate_legacy(rows, snapshot)
        for name in eval_stage_names(ctx, include_base):
            systems[name] = model_run(name, rows, split)
        results[split] = evaluate_cached(out / split, systems, ctx.progress)
    return _write_chain_report(ctx, results, golden, refit, t_eval)


def _write_chain_report(ctx: ChainContext, results, golden, refit, t_eval: float) -> dict[str, Any]:
    from qp_core.legacy.pipeline import read_annotations, snapshot_rows
    from qp_core.legacy.settings import load_legacy_settings
    from qp_core.training.data import traffic_sample

    s = ctx.settings
    gold, dev = results["golden"], results["dev"]
    order = [n for n in (LEGACY_REFIT, LEGACY_SNAPSHOT, *MODEL_ORDER) if n in gold]
    masks, shares = None, None
    if refit is not None:
        snap, _ = snapshot_rows(read_annotations(), load_legacy_settings().snapshot_days)
        masks, shares = slice_setup(golden, snap, traffic_sample(s.eval.traffic_sample, seed=s.seed), refit)
    rows = []
    for name in order:
        info = stage_done(ctx, name) or {}
        row = {"name": NAMES.get(name, name), "stage": name, **plain_metrics(gold[name])}
        if info.get("wall_s") is not None:
            row["stage_wall_s"] = info["wall_s"]
        rows.append(row)
        srv = gold[name].get("served") or {}
        if srv.get("fallback_rate"):  # identical to the row above when 0
            rows.append({"name": f"{row['name']} as served (legacy fallback on invalid)",
                         "stage": f"{name}+fallback", **plain_metrics(srv)})
    cmp_rows = comparison_rows(gold, comparison_pairs(order), masks=masks, shares=shares, seed=s.seed)
    extra = {"Paired comparisons on the golden set (difference [95% interval] verdict)":
             [{k: v for k, v in r.items() if k not in ("a", "b", "intervals")} for r in cmp_rows]}
    if masks is not None:
        title = "Overall per slice; traffic-weighted with shares " + ", ".join(
            f"{k} {v:.2f}" for k, v in (shares or {}).items())
        extra[title] = slice_rows(gold, order, masks, shares)
    extra["Dev split (what the gate and the stage choice read; Overall as served)"] = [
        {"name": NAMES.get(n, n), "Overall": served(dev[n]).get("overall"), "n": dev[n].get("n")}
        for n in order if n in dev]
    dump(ctx.stage_dir("evaluate") / "comparisons.json",
         [{k: r[k] for k in ("a", "b", "name", "verdict", "intervals")} for r in cmp_rows])
    histories, times = {}, {}
    for stage in STAGES:
        info = stage_done(ctx, stage)
        if info and info.get("wall_s") is not None:
            times[stage] = float(info["wall_s"])
        hist = ctx.stage_dir(stage) / "log_history.json"
        if stage in ("sft1", "sft2", "grpo") and hist.exists():
            histories[NAMES[stage]] = json.loads(hist.read_text(encoding="utf-8"))
    times.setdefault("evaluate", round(time.time() - t_eval, 1))
    paths_ = write_report(ctx.run_dir / "report", rows, histories=histories, stage_times=times,
                          notes=report_notes(ctx, cmp_rows), extra_tables=extra,
                          title=f"Training chain report — run {ctx.run_id} ({s.profile})")
    return {"report": {k: str(v) for k, v in paths_.items()}, "rows": len(rows)}


# ------------------------------------------------------------------------------------- the promote stage


def candidate_stage(ctx: ChainContext) -> tuple[str, list[str]]:
    """The stage to promote: the best trained stage on the dev split, with the others' intervals against it."""
    from qp_core.training.state import read_json_marker

    dev = {}
    for stage in MODEL_ORDER[1:]:
        info = stage_done(ctx, stage)
        m = read_json_marker(ctx.stage_dir("evaluate") / "dev" / f"{stage}.json")
        if info and not info.get("skipped") and m is not None:
            dev[stage] = m
    if not dev:
        raise RuntimeError("no trained model stage evaluated on the dev split: run the evaluate stage first")
    return best_stage(dev, list(dev), seed=ctx.settings.seed)


def stage_promote(ctx: ChainContext, force: bool = False) -> dict[str, Any]:
    """Register the best stage on dev; promote it when the gate passes on dev (paired interval), or ``force``."""
    from qp_core import registry
    from qp_core.prompt import PROMPT_VERSION
    from qp_core.rules import rules_version
    from qp_core.lake import ANNOTATIONS, AUX, GOLDEN
    from qp_core.training.data import data_version
    from qp_core.training.run import mark_done
    from qp_core.training.state import read_json_marker

    s = ctx.settings
    stage, choice = candidate_stage(ctx)
    ev = ctx.stage_dir("evaluate")
    golden, dev = read_json_marker(ev / "golden" / f"{stage}.json"), read_json_marker(ev / "dev" / f"{stage}.json")
    if golden is None or dev is None:
        raise RuntimeError(f"no evaluation of {stage}: run the evaluate stage first")
    info = stage_done(ctx, "promote") or {}
    if info.get("version") and info.get("stage") == stage:
        version = info["version"]
    else:
        record = registry.register(model_dir(ctx, stage), {
            "profile": s.profile, "rules_mode": ctx.rules_mode, "rules_version": rules_version(),
            "prompt_version": PROMPT_VERSION, "stage": stage, "metrics": _record_metrics(golden),
            "dev_metrics": _record_metrics(dev), "run_id": ctx.run_id, "context": s.context, "section": s.section,
            "data_versions": {"annotations": data_version(ANNOTATIONS), "golden": data_version(GOLDEN),
                              "aux": data_version(AUX) if s.sft1.lambda_aux > 0 else "unused",
                              "run_dt": ctx.dt, "dev_fraction": s.eval.dev_fraction},
        })
        version = record.version
        mark_done(ctx, "promote", {"version": version, "stage": stage, "partial": True})
    reference = _dev_reference(ctx)
    comparison = compare(served(dev), served(reference), seed=s.seed, draws=s.eval.bootstrap_draws)
    legacy_golden = read_json_marker(ev / "golden" / f"{LEGACY_SNAPSHOT}.json")
    try:
        decision = registry.promote(version, force=force, settings=s.gate,
                                    baseline=_record_metrics(legacy_golden) if legacy_golden else None,
                                    dev=(_record_metrics(dev), _record_metrics(reference), comparison))
        promoted, reasons = True, decision.reasons
    except registry.RegistryError as exc:
        promoted, reasons = False, [str(exc)]
    ctx.progress(f"promote: {version} ({stage}) {'PROMOTED' if promoted else 'not promoted, stays a candidate'} "
                 f"({'; '.join(reasons)})")
    return {"version": version, "stage": stage, "promoted": promoted, "gate": reasons, "stage_choice": choice,
            "dev_comparison": comparison["all"], "partial": False}


def _record_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as a registry record keeps them: no per-row counts, served metrics kept (the gate reads them)."""
    out = plain_metrics(dict(metrics))
    if isinstance(metrics.get("served"), dict):
        out["served"] = plain_metrics(metrics["served"])
    return out


def _dev_reference(ctx: ChainContext) -> dict[str, Any]:
    """What the candidate must not be worse than on the same dev rows: the production model (evaluated here
    once, cached), else the legacy snapshot the nearline serves without one."""
    from qp_core import registry
    from qp_core.legacy import load_or_train
    from qp_core.training.evaluate import evaluate_model
    from qp_core.training.state import read_json_marker, write_json_atomic

    ev = ctx.stage_dir("evaluate") / "dev"
    current = registry.production()
    if current is None:
        ref = read_json_marker(ev / f"{LEGACY_SNAPSHOT}.json")
        if ref is None:
            raise RuntimeError("no legacy evaluation on the dev split: run the evaluate stage first")
        return ref
    cache = ev / f"production-{current.version}.json"
    ref = read_json_marker(cache)
    if ref is None:
        s = ctx.settings
        ref = evaluate_model(current.path, dev_annotations(ctx), rules_mode=current.rules_mode,
                             context=bool(current.extra.get("context", True)), batch_size=s.eval.batch_size,
                             max_new_tokens=s.eval.max_new_tokens, bf16=s.bf16, fallback=load_or_train(),
                             query_grammar=serving_uses_query_grammar())
        write_json_atomic(cache, ref)
    return ref
