"""`qp run`: run the daily pipeline (or single steps) for one date, without Airflow.

The commands are exactly those the DAG's tasks run (``qp_core.nearline.steps.STEPS``), so a step can be
re-run by hand while debugging a failed Airflow task.
"""

from __future__ import annotations

import typer
from rich.console import Console

from qp_core import lake
from qp_core.nearline import steps
from qp_core.ops import process

app = typer.Typer(help="Run the daily pipeline or one of its steps for a date.", no_args_is_help=True)
console = Console(stderr=True)


def progress_printer(prefix: str = ""):
    """``on_step`` callback of :func:`qp_core.nearline.steps.run_day` printing one line per step."""

    def on_step(name: str, shards: list[int] | None, status: str, seconds: float) -> None:
        label = f"{name} (shards {','.join(map(str, shards))})" if shards is not None else name
        if status == "start":
            console.print(f"{prefix}[cyan]→[/] {label} …")
        else:
            console.print(f"{prefix}[green]✓[/] {label} [dim]{seconds:.1f}s[/]")

    return on_step


@app.command("list")
def list_steps() -> None:
    """List the steps of the daily pipeline in order."""
    for s in steps.STEPS:
        typer.echo(f"{s.name:<10} {s.runner:<6} jobs/{s.job}.py{'  (per shard)' if s.per_shard else ''}  {s.doc}")


@app.command("day")
def run_day(
    dt: str = typer.Option(..., "--dt", help="partition date YYYY-MM-DD"),
    steps: list[str] = typer.Option(None, "--step", help="only these steps (repeatable); default all"),
) -> None:
    """Run all steps (or the chosen ones) for DT in the DAG's order."""
    try:
        report = steps.run_day(dt, steps=steps or None, on_step=progress_printer())
    except (process.StepFailed, steps.NoProductionModel, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(1)
    console.print(f"[bold green]{dt} done[/] in {report.seconds:.1f}s (namespace {report.target.namespace})")


@app.command("step")
def run_step(
    name: str = typer.Argument(..., help=f"one of: {', '.join(steps.STEP_NAMES)}"),
    dt: str = typer.Option(..., "--dt", help="partition date YYYY-MM-DD"),
    shards: list[int] = typer.Option(None, "--shard", help="shard number, repeatable (generate; default all)"),
    print_only: bool = typer.Option(False, "--print", help="print the command instead of running it"),
) -> None:
    """Run one step for DT (the same command line the Airflow task runs)."""
    try:
        target = steps.resolve_target()
        s = steps.step(name)
        group = (list(shards) or lake.prompt_shards(dt)) if s.per_shard else None
        if s.per_shard and not group:
            console.print(f"no prompt shards for {dt}: nothing to generate")
            return
        if print_only:
            typer.echo(" ".join(steps.command(s, dt, target, group)))
        else:
            seconds = steps.run_step(name, dt, target, group)
            console.print(f"[green]✓[/] {name} {seconds:.1f}s")
    except (process.StepFailed, steps.NoProductionModel, KeyError, ValueError) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(1)
