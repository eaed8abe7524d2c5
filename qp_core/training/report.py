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
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
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


def plain_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of arbitrary rows: columns are the keys in first-seen order, ``name`` first."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k != "name"]
    lines = ["| " + " | ".join(["Model", *cols]) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r.get('name', '')} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
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
    """Write report.json, report.md, loss_curves.png, metrics.png into ``out_dir``; returns their paths.

    ``extra_tables`` (title -> rows with any columns) follow the main table in report.md and are kept in
    ``report_tables.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    if extra_tables:
        paths["tables_json"] = out / "report_tables.json"
        paths["tables_json"].write_text(json.dumps(extra_tables, ensure_ascii=False, indent=1, default=str),
                                        encoding="utf-8")
    loss_png = plot_losses(histories or {}, out / "loss_curves.png")
    metrics_png = plot_metrics(rows, out / "metrics.png")
    md = [f"# {title}", "", markdown_table(rows), ""]
    n = {r.get("n") for r in rows if r.get("n")}
    if n:
        md.append(f"Golden rows evaluated: {', '.join(str(x) for x in sorted(n))}. Scores 0–100, micro-averaged.")
        md.append("")
    for name, table in (extra_tables or {}).items():
        md += [f"## {name}", "", plain_table(table), ""]
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
    "legacy_refit": "legacy refitted on the model's training annotations (fair baseline)",
    "legacy": "legacy snapshot (stale; what the nearline fallback serves)",
    "base": "stage 0 (base)",
    "sft1": "stage 1 SFT (unified + λ·aux)",
    "sft2": "stage 2 SFT (recent)",
    "grpo": "stage 3 GRPO",
}


def plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A metric dict for a report row or a registry record: no nested served metrics, no per-row counts."""
    return {k: v for k, v in metrics.items() if k not in ("served", "per_row")}


def report_notes(ctx: ChainContext, comparisons: list[dict[str, Any]]) -> list[str]:
    """Settings that shaped the run, then each comparison the report makes: the difference with its 95%
    paired-bootstrap interval and a verdict only where the interval excludes zero (``training.compare``)."""
    from qp_core.training.compare import fmt_interval

    s = ctx.settings
    notes = [
        f"profile {s.profile} (rules_mode {ctx.rules_mode}), section {s.section}, context {'on' if s.context else 'off'}",
        f"stage 1 mixing: λ = {s.sft1.lambda_aux} as a sampling fraction (aux rows = round(λ·N_unified))",
        f"GRPO: multi_objective_aggregation={s.grpo.multi_objective_aggregation}, β={s.grpo.beta}, "
        f"G={s.grpo.num_generations}, weights={effective_weights(s)}, rollouts under the query grammar: "
        f"{s.grpo.query_grammar}",
        f"intervals: paired bootstrap over the evaluated rows ({s.eval.bootstrap_draws} draws), 95%; "
        "'better'/'worse' only where the interval excludes zero",
    ]
    filt = stage_done(ctx, "filter")
    if filt:
        sm = filt.get("summary", {})
        notes.append(f"GRPO filter kept {sm.get('kept')}/{sm.get('candidates')} prompts (valid rollouts "
                     f"{sm.get('valid_rollout_fraction')}); kept per task {sm.get('kept_per_task')}")
    hist = ctx.stage_dir("grpo") / "log_history.json"
    if hist.exists():
        line = grpo_dynamics(json.loads(hist.read_text(encoding="utf-8")))
        if line:
            notes.append(line)
    ablations = ctx.run_dir / "ablations" / "report.md"
    notes.append(f"context ablation and controls: {ablations}" if ablations.exists() else
                 f"context ablation and controls (not run yet): `qp train ablation context-off --run-id {ctx.run_id}` "
                 "(also step-matched, lambda-0, isolated; docs/training.md)")
    for c in comparisons:
        cmp = c["intervals"]
        line = f"{ROW_NAMES.get(c['a'], c['a'])} − {ROW_NAMES.get(c['b'], c['b'])}: Overall {fmt_interval(cmp['all']['overall'])}"
        if (c["a"], c["b"]) == ("grpo", "sft2"):
            line += f"; TW {fmt_interval(cmp['all']['tw_f1'])} (the paper's Table-4 claim)"
        if "ambiguous" in cmp:
            line += f"; ambiguous slice {fmt_interval(cmp['ambiguous']['overall'])}"
        notes.append(line)
    return notes


def grpo_dynamics(history: list[dict[str, Any]]) -> str | None:
    """What GRPO's own log says about whether it could learn: the mean total and TW reward of its rollouts
    in the first and last quarter of the logged steps, the share of groups whose rewards were all equal (no
    advantage, no gradient), and the KL to stage 2 at its peak and at the end. A flat reward with a growing KL means the
    policy moved without the rewards asking it to — the first thing to read when GRPO loses to stage 2."""
    logged = [h for h in history if "reward" in h]
    if len(logged) < 2:
        return None
    q = max(1, len(logged) // 4)
    first, last = logged[:q], logged[-q:]

    def mean(rows, key):
        vals = [r[key] for r in rows if key in r]
        return sum(vals) / len(vals) if vals else float("nan")

    tw = "rewards/tw_reward/mean"
    peak = max(logged, key=lambda h: h.get("kl", 0.0))
    return (f"GRPO dynamics (trainer log, steps {first[0].get('step')}–{first[-1].get('step')} vs "
            f"{last[0].get('step')}–{last[-1].get('step')}): reward {mean(first, 'reward'):.3f} → "
            f"{mean(last, 'reward'):.3f}, TW reward {mean(first, tw):.3f} → {mean(last, tw):.3f}, groups with "
            f"equal rewards {mean(logged, 'frac_reward_zero_std'):.0%}, KL to stage 2 {peak.get('kl', 0):.3f} at "
            f"its peak (step {peak.get('step')}), {logged[-1].get('kl', 0):.3f} at the end")


def effective_weights(s: TrainingSettings) -> dict[str, float]:
    if s.grpo.weights:
        return dict(s.grpo.weights)
    from qp_core.rewards import load_reward_settings

    return dict(load_reward_settings().weights)
