"""`qp world` commands: generate the synthetic SNS search world into the lake."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Synthetic SNS search world (stand-in for production data).", no_args_is_help=True)


@app.command("generate")
def generate_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Lake root to write into (default: qp_core.paths.lake_root())."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed; same seed -> byte-identical files."),
    days: Optional[int] = typer.Option(None, "--days", help="Number of daily log/annotation partitions."),
    rows_per_day: Optional[int] = typer.Option(None, "--rows-per-day", help="Query-log rows per day."),
    start_date: Optional[str] = typer.Option(None, "--start-date", help="First partition date, YYYY-MM-DD."),
    annotations: Optional[int] = typer.Option(None, "--annotations", help="Annotated rows over all days."),
    golden: Optional[int] = typer.Option(None, "--golden", help="Golden test rows."),
    notes: Optional[int] = typer.Option(None, "--notes", help="Notes in the pool."),
) -> None:
    """Write raw/query_log/dt=*, raw/notes, raw/annotations/dt=*, raw/golden (defaults: conf/world.yaml)."""
    from rich.console import Console

    from qp_core.paths import lake_root
    from qp_core.world import generate

    console = Console(stderr=True)
    root = out or lake_root()
    t0 = time.perf_counter()
    with console.status("generating the synthetic world…") as status:
        summary = generate(
            root,
            seed=seed,
            days=days,
            rows_per_day=rows_per_day,
            start_date=start_date,
            annotations_total=annotations,
            golden=golden,
            notes=notes,
            progress=lambda msg: (status.update(msg), console.log(msg)),
        )
    elapsed = time.perf_counter() - t0
    n_log = sum(d["query_log"] for d in summary["days"].values())
    n_ann = sum(d["annotations"] for d in summary["days"].values())
    console.print(
        f"[green]world written[/green] to {root}: {n_log} log rows over {len(summary['days'])} days, "
        f"{n_ann} annotations, {summary['golden']} golden, {summary['notes']} notes "
        f"in {elapsed:.1f} s ({n_log / elapsed:,.0f} log rows/s)"
    )
