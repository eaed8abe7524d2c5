"""`qp eval`: metrics on the golden set (paper §5.1.2), printed as a table and optionally saved as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Evaluate models on the golden set.", no_args_is_help=True)

# (header, metrics key): NER/Seg/TW are F1, Tax = ½(top-1 + F1), Top-1 = taxonomy top-1 accuracy,
# chrF = intent description chrF; headers stay short so the table fits an 80-column terminal.
COLUMNS = (("NER", "ner_f1"), ("Seg", "seg_f1"), ("TW", "tw_f1"), ("Tax", "taxonomy"), ("Overall", "overall"),
           ("Top-1", "taxonomy_top1"), ("chrF", "intent_chrf"), ("Valid", "valid_rate"))


def metrics_table(rows: dict[str, dict[str, Any]], title: str = "Golden-set metrics (0-100)") -> Table:
    """One row per system; reusable by every `qp eval` sub-command."""
    table = Table(title=title, caption="NER/Seg/TW: F1; Tax: ½(top-1 acc + label F1); chrF: intent description")
    table.add_column("system")
    for name, _ in COLUMNS:
        table.add_column(name, justify="right")
    for system, m in rows.items():
        cells = []
        for _, key in COLUMNS:
            v = m.get(key)
            cells.append("-" if v is None else f"{100 * v:.0f}%" if key == "valid_rate" else f"{v:.2f}")
        table.add_row(system, *cells)
    return table


@app.command("legacy")
def legacy(
    lake: Optional[Path] = typer.Option(None, "--lake", help="Lake root (default: $QP_LAKE_ROOT or $QP_HOME/lake)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the full report (with breakdowns) as JSON."),
) -> None:
    """Train (or load the cached) legacy pipeline on raw/annotations and score it on raw/golden."""
    from qp_core.legacy.report import evaluate_legacy

    console = Console()
    with console.status("legacy pipeline: load or train, then predict the golden set"):
        report = evaluate_legacy(lake)
    rows = {"legacy": report["legacy"]}
    if "trivial" in report:
        rows["trivial"] = report["trivial"]
    console.print(metrics_table(rows))
    meta = report["meta"]
    console.print(f"golden n={meta['n_golden']}  train rows={meta['n_train_rows']}  "
                  f"load/train {meta['load_or_train_s']}s  predict {meta['predict_s']}s "
                  f"({meta['queries_per_s']} q/s)")
    by_type = report["legacy"].get("ner_by_type", {})
    if by_type:
        console.print("NER F1 by type: " + ", ".join(f"{t} {v.get('f1', 0):.1f}" for t, v in by_type.items()))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"report written to {out}")
