"""The chain's report: ``report.json`` (one row per model), ``report.md`` (tables like the paper's Tables 1/4)
and PNG plots (training loss per stage, metrics per stage).

``report.json`` rows are ``{"name": ..., <every key of metrics.evaluate>}``; extra keys a row may carry
(``stage_wall_s``, ``eval_s``, ``n``) are documented in docs/training.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from qp_core.training.config import TrainingSettings
from qp_core.training.run import ChainContext, stage_done

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    ("Overall", "overall"),
    ("NER", "ner_f1"),
    ("Seg", "seg_f1"),
    ("TW", "tw_f1"),
    ("Taxonomy", "taxonomy"),
    ("valid JSON %", "valid_pct"),
    ("valid without grammar %", "free_valid_pct"),
    ("fallback %", "fallback_pct"),
    ("intent chrF", "intent_chrf"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.2f}"
    return "–" if value is None else str(value)


def _with_derived(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if isinstance(row.get("valid_rate"), (int, float)):
        out["valid_pct"] = 100.0 * row["valid_rate"]  # metrics.evaluate reports a fraction 0-1
    if isinstance(row.get("free_valid_rate"), (int, float)):
        out["free_valid_pct"] = 100.0 * row["free_valid_rate"]
    if isinstance(row.get("fallback_rate"), (int, float)):
        out["fallback_pct"] = 100.0 * row["fallback_rate"]
    return out


def markdown_table(rows: list[dict[str, Any]], columns=TABLE_COLUMNS) -> str:
    rows = [_with_derived(r) for r in rows]
    best = {}
    for _, key in columns:
        vals = [r.get(key) for r in rows if isinstance(r.get(key), (int, float))]
        best[key] = max(vals) if vals else None
    head = "| Model | " + " | ".join(c for c, _ in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key in columns:
            v = r.get(key)
            cell = _fmt(v)
            if v is not None and v == best[key] and len(rows) > 1:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_losses(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path | None:
    """Training loss vs. step, one line per stage (GRPO's loss is its policy loss; reward on a twin axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: [(h["step"], h["loss"]) for h in hist if "loss" in h and "step" in h] for name, hist in histories.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, pts) in zip(axes[0], series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        rewards = [(h["step"], h["reward"]) for h in histories[name] if "reward" in h and "step" in h]
        if rewards:
            ax2 = ax.twinx()
            ax2.plot([p[0] for p in rewards], [p[1] for p in rewards], color="tab:green", lw=1)
            ax2.set_ylabel("reward", color="tab:green")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metrics(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Grouped bars: Overall and each sub-task per model row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in TABLE_COLUMNS[:5]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(cols) * max(1, len(rows)) / 2), 3.6))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(cols))]
        ax.bar(xs, [float(r.get(k) or 0.0) for _, k in cols], width, label=r["name"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))])
    ax.set_xticklabels([c for c, _ in cols])
    ax.set_ylabel("score (0–100)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    out_dir: str | Path,
    rows: list[dict[str, Any]],
    *,
    histories: dict[str, list[dict[str, Any]]] | None = None,
    stage_times: dict[str, float] | None = None,
    notes: list[str] | None = None,
    title: str = "Training chain report",
    extra_tables: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Path]:
    """Write report.json, report.md, loss_curves.png, metrics.png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    loss_png = plot_losses(histories or {}, out / "loss_curves.png")
    metrics_png = plot_metrics(rows, out / "metrics.png")
    md = [f"# {title}", "", markdown_table(rows), ""]
    n = {r.get("n") for r in rows if r.get("n")}
    if n:
        md.append(f"Golden rows evaluated: {', '.join(str(x) for x in sorted(n))}. Scores 0–100, micro-averaged.")
        md.append("")
    for name, table in (extra_tables or {}).items():
        md += [f"## {name}", "", markdown_table(table), ""]
    if stage_times:
        md += ["## Wall time per stage", "", "| stage | seconds |", "|---|---:|"]
        md += [f"| {k} | {v:.1f} |" for k, v in stage_times.items()]
        md.append("")
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if loss_png:
        md += ["## Loss curves", "", f"![loss curves]({loss_png.name})", ""]
        paths["loss_png"] = loss_png
    if metrics_png:
        md += ["## Metrics per stage", "", f"![metrics per stage]({metrics_png.name})", ""]
        paths["metrics_png"] = metrics_png
    paths["md"] = out / "report.md"
    paths["md"].write_text("\n".join(md), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------ run notes
# The prose under the chain report's table: settings that shaped the run and what each stage changed.

ROW_NAMES = {
    "legacy": "legacy pipeline",
    "base": "stage 0 (base)",
    "sft1": "stage 1 SFT (unified + λ·aux)",
    "sft2": "stage 2 SFT (recent)",
    "grpo": "stage 3 GRPO",
}


def plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "served"}


def report_notes(ctx: ChainContext, results: dict[str, dict[str, Any]]) -> list[str]:
    s = ctx.settings
    notes = [
        f"profile {s.profile} (rules_mode {ctx.rules_mode}), section {s.section}, context {'on' if s.context else 'off'}",
        f"stage 1 mixing: λ = {s.sft1.lambda_aux} as a sampling fraction (aux rows = round(λ·N_unified))",
        f"GRPO: multi_objective_aggregation={s.grpo.multi_objective_aggregation}, β={s.grpo.beta}, "
        f"G={s.grpo.num_generations}, weights={effective_weights(s)}",
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


def effective_weights(s: TrainingSettings) -> dict[str, float]:
    if s.grpo.weights:
        return dict(s.grpo.weights)
    from qp_core.rewards import load_reward_settings

    return dict(load_reward_settings().weights)
