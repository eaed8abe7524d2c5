"""Ablations and controls next to a finished run: Table 2's task-isolated models vs the unified model, and
the controls of ``CONTROLS`` (context off, a step-matched long stage 1, λ = 0 at equal steps).

Why apart from the chain's stages: an ablation trains extra models outside the chain's order and is run by
hand (``qp train ablation <which> --run-id <run>``); it reuses the chain's run folder, stages, evaluation
and report writer, and every comparison is a paired 95% interval on the same golden rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qp_core.training.callbacks import ProgressCallback
from qp_core.training.report import ROW_NAMES, plain_metrics, write_report
from qp_core.training.run import ChainContext, model_dir, training_annotations
from qp_core.training.stages import run_stage


def isolated_examples(ctx: ChainContext, task: str, rows: list[dict[str, Any]],
                      aux: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Training mix of the task-``task`` model: ``stages.sft1_examples`` with each unified example replaced by
    the isolated one (same prompt, rules and context, asking for ``task``'s fields) and only ``task``'s
    share of the stage-1 pseudo-labels, the same rows the unified mix draws for that task."""
    from qp_core.training.data import isolated_example, mix_aux

    s = ctx.settings
    isolated = [isolated_example(task, r, ctx.rules_mode, s.context) for r in rows]
    return mix_aux(isolated, aux, s.sft1.lambda_aux, seed=s.seed, only_task=task)


def run_isolated_ablation(ctx: ChainContext, steps: int | None = None, tasks=("ner", "seg", "tw", "taxonomy")) -> dict[str, Any]:
    """Table 2: one model per sub-task vs the unified stage-1 model, on equal terms but for the task count.

    Each isolated model starts from the same base with stage 1's settings (steps, learning rate, batch;
    ``steps`` overrides the step count) and is trained and evaluated like stage 1 except that it is asked
    for its own task only: the unified prompt with its rules and context (``prompt.build_isolated_messages``),
    the same pseudo-labels of its task that the stage-1 mix holds (λ·N split equally over the aux tasks,
    ``isolated_examples``), and greedy decoding under that task's grammar (``grammar.task_grammar``) on the
    same golden rows (``evaluate.evaluate_task_models_separately``, whose ``per_row`` pairs with stage 1's).
    Models live in ``isolated/matched/<task>``: the ``isolated/<task>`` models of the earlier recipe (short
    prompt, no rules or context, λ = 0, free decoding) are not reused.
    """
    from qp_core.training.assess import serving_uses_query_grammar
    from qp_core.training.data import golden_rows, stage1_aux
    from qp_core.training.evaluate import evaluate_task_models_separately
    from qp_core.training.sft import train_sft

    s = ctx.settings
    run_stage(ctx, "base")
    anns = training_annotations(ctx)
    aux = stage1_aux(s.sft1.lambda_aux)
    st = s.sft1.model_copy(update={"max_steps": steps or s.sft1.max_steps})
    dirs = {}
    for task in tasks:
        ctx.progress(f"[isolated] training the {task} model ({st.max_steps} steps)")
        res = train_sft(model_dir(ctx, "base"), isolated_examples(ctx, task, anns, aux),
                        ctx.run_dir / "isolated" / "matched" / task, st, bf16=s.bf16, seed=s.seed,
                        threads=s.threads, callbacks=[ProgressCallback(ctx, f"isolated/{task}", st.max_steps)])
        dirs[task] = res.model_dir
    rows = golden_rows(s.eval.limit, seed=s.seed)
    metrics = evaluate_task_models_separately(dirs, rows, rules_mode=ctx.rules_mode, context=s.context,
                                              batch_size=s.eval.batch_size, max_new_tokens=s.eval.max_new_tokens,
                                              bf16=s.bf16, task_grammar=serving_uses_query_grammar())
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
    notes = []
    if isolated:
        rows.append({"name": "task-isolated models (Table 2)", **plain_metrics(isolated["metrics"])})
        notes += isolated_comparison(ctx, isolated["metrics"])
    for which, control in controls.items():
        notes += control_comparison(ctx, control, which)
        for name in CONTROLS[which]["stages"]:
            p = control.stage_dir("evaluate") / "golden" / f"{name}.json"
            if p.exists():
                rows.append({"name": f"{ROW_NAMES[name]} [{which}]",
                             **plain_metrics(json.loads(p.read_text(encoding="utf-8")))})
    return write_report(ctx.run_dir / "ablations", rows, notes=notes, title=f"Ablations — run {ctx.run_id}")


def isolated_comparison(ctx: ChainContext, isolated: dict[str, Any]) -> list[str]:
    """(unified stage 1 − task-isolated models) on the same golden rows, Overall and per task, each with its
    paired 95% interval: both sides' ``per_row`` counts share ``metrics.ROW_COLUMNS``'s layout."""
    from qp_core.training.compare import fmt_interval, paired_bootstrap
    from qp_core.training.state import read_json_marker

    s = ctx.settings
    unified = read_json_marker(ctx.stage_dir("evaluate") / "golden" / "sft1.json")
    if not unified or len(unified.get("per_row", [])) != len(isolated.get("per_row", [])) or not unified["per_row"]:
        return []
    cmp = paired_bootstrap(unified["per_row"], isolated["per_row"], seed=s.seed, draws=s.eval.bootstrap_draws)["all"]
    keys = (("Overall", "overall"), ("NER", "ner_f1"), ("Seg", "seg_f1"), ("TW", "tw_f1"), ("Taxonomy", "taxonomy"))
    parts = "; ".join(f"{label} {fmt_interval(cmp[key])}" for label, key in keys)
    return [f"[isolated] {ROW_NAMES['sft1']} − task-isolated models: {parts}"]


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
