"""Ablations of the paper's Table 2: task-isolated models vs the unified model, and context on vs off.

Why apart from the chain's stages: an ablation trains extra models outside the chain's order and is run by
hand (``qp train ablate``); it reuses the chain's run folder, stages and report writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qp_core.training.callbacks import ProgressCallback
from qp_core.training.report import ROW_NAMES, write_report
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


def ablation_report(ctx: ChainContext, isolated: dict[str, Any] | None, noctx_ctx: ChainContext | None) -> dict[str, Path]:
    """Table-2-like report: unified (this run's stage 1/2) vs task-isolated vs context off."""
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
