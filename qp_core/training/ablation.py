"""Ablations of the paper's Table 2: task-isolated models vs the unified model, and context on vs off.

Why apart from the chain's stages: an ablation trains extra models outside the chain's order and is run by
hand (``qp train ablate``); it reuses the chain's run folder, stages and report writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qp_core.training.callbacks import ProgressCallback
from qp_core.training.report import ROW_NAMES, plain_metrics, write_report
from qp_core.training.run import ChainContext, model_dir, training_annotations
from qp_core.training.stages import run_stage


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
                        callbacks=[ProgressCallback(ctx, f"isolated/{task}", st.max_steps)])
        dirs[task] = res.model_dir
    rows = golden_rows(s.eval.limit, seed=s.seed)
    metrics = evaluate_task_models_separately(dirs, rows, batch_size=s.eval.batch_size,
                                              max_new_tokens=s.eval.max_new_tokens, bf16=s.bf16)
    out = ctx.run_dir / "isolated" / "metrics.json"
    out.write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
    return {"metrics": metrics, "path": str(out)}


# A control run: a sibling chain (``<run>-<suffix>``) with settings ``overrides`` and the SFT ``stages`` it
# trains, then ``pairs``: (this run's stage, the control's stage) compared row by row on the golden set.
CONTROLS: dict[str, dict[str, Any]] = {
    # Context on vs off: the same SFT stages with prompts without history/notes (paper §4.2's C).
    "context-off": {"suffix": "noctx", "overrides": lambda s: {"context": False},
                    "stages": ["sft1", "sft2"], "pairs": [("sft1", "sft1"), ("sft2", "sft2")]},
    # Stage 2 at equal compute: one stage 1 as long as stage 1 + stage 2 together.
    "step-matched": {"suffix": "long-sft1",
                     "overrides": lambda s: {"sft1": {"max_steps": s.sft1.max_steps + s.sft2.max_steps}},
                     "stages": ["sft1"], "pairs": [("sft2", "sft1")]},
    # λ (pseudo-labelled auxiliary share) at equal steps: stage 1 with λ = 0.
    "lambda-0": {"suffix": "lambda0", "overrides": lambda s: {"sft1": {"lambda_aux": 0.0}},
                 "stages": ["sft1"], "pairs": [("sft1", "sft1")]},
}


def control_run_id(ctx: ChainContext, which: str) -> str:
    return f"{ctx.run_id}-{CONTROLS[which]['suffix']}"


def run_control(control: ChainContext, which: str) -> None:
    """Train the control's stages and score them on golden/dev (no legacy rows: the main run has them)."""
    from qp_core.training.stages import run_chain

    run_chain(control, ["base", *CONTROLS[which]["stages"], "evaluate"], evaluate={"legacy": False})


def ablation_report(ctx: ChainContext, isolated: dict[str, Any] | None,
                    controls: dict[str, ChainContext]) -> dict[str, Path]:
    """Table-2-like report: this run's rows, the task-isolated models, each control's stages, and notes with
    the paired 95% interval of every (run stage − control stage) difference, overall and on the ambiguous slice."""
    rows = []
    for name in ("legacy_refit", "legacy", "sft1", "sft2"):
        p = ctx.stage_dir("evaluate") / "golden" / f"{name}.json"
        if p.exists():
            rows.append({"name": ROW_NAMES[name] + ("" if name.startswith("legacy") else " (this run)"),
                         **plain_metrics(json.loads(p.read_text(encoding="utf-8")))})
    if isolated:
        rows.append({"name": "task-isolated models (Table 2)", **isolated["metrics"]})
    notes = []
    for which, control in controls.items():
        notes += control_comparison(ctx, control, which)
        for name in CONTROLS[which]["stages"]:
            p = control.stage_dir("evaluate") / "golden" / f"{name}.json"
            if p.exists():
                rows.append({"name": f"{ROW_NAMES[name]} [{which}]",
                             **plain_metrics(json.loads(p.read_text(encoding="utf-8")))})
    return write_report(ctx.run_dir / "ablations", rows, notes=notes, title=f"Ablations — run {ctx.run_id}")


def control_comparison(ctx: ChainContext, control: ChainContext, which: str) -> list[str]:
    """(this run's stage − the control's stage) on the same golden rows: Overall, TW and the ambiguous slice
    (the queries whose labels depend on history/notes), each with its paired 95% interval (``training.compare``)."""
    from qp_core.legacy.pipeline import read_annotations, snapshot_rows
    from qp_core.legacy.settings import load_legacy_settings
    from qp_core.training.compare import fmt_interval, paired_bootstrap, slice_masks, snapshot_vocabulary
    from qp_core.training.data import golden_rows
    from qp_core.training.state import read_json_marker

    s = ctx.settings
    snap, _ = snapshot_rows(read_annotations(), load_legacy_settings().snapshot_days)
    masks = slice_masks(golden_rows(s.eval.limit, seed=s.seed), snapshot_vocabulary(snap))
    notes = []
    for mine, theirs in CONTROLS[which]["pairs"]:
        a = read_json_marker(ctx.stage_dir("evaluate") / "golden" / f"{mine}.json")
        b = read_json_marker(control.stage_dir("evaluate") / "golden" / f"{theirs}.json")
        if not a or not b or len(a.get("per_row", [])) != len(b.get("per_row", [])):
            continue
        cmp = paired_bootstrap(a["per_row"], b["per_row"], masks=masks, seed=s.seed, draws=s.eval.bootstrap_draws)
        line = (f"[{which}] {ROW_NAMES[mine]} − {ROW_NAMES[theirs]} [{which}]: "
                f"Overall {fmt_interval(cmp['all']['overall'])}; TW {fmt_interval(cmp['all']['tw_f1'])}")
        if "ambiguous" in cmp:
            line += f"; ambiguous slice (n={cmp['ambiguous']['n']}) {fmt_interval(cmp['ambiguous']['overall'])}"
        notes.append(line)
    return notes
