"""`qp backfill --start D1 --end D2`: re-run the daily pipeline over a date range.

Two ways, same steps (``qp_core.nearline.steps``), same result (every step overwrites its own partition, so a
backfill over dates already processed changes nothing):

* serial (default): date by date, step by step, in this process's shell — laptop-friendly, no scheduler;
* ``--airflow``: Airflow's native backfill (``airflow backfill create``) against a local
  ``airflow standalone`` started for the occasion (or an already running one with ``--no-start``).

Dates run oldest first: each day's sample compares with what the previous days published.
"""

from __future__ import annotations

import time

import typer
from rich.console import Console

from qp_core import lake
from qp_core.nearline import steps
from qp_core.ops import process

app = typer.Typer(help=__doc__.splitlines()[0], invoke_without_command=True)
console = Console(stderr=True)


@app.callback()
def backfill(
    start: str = typer.Option(..., "--start", help="first date YYYY-MM-DD (inclusive)"),
    end: str = typer.Option(..., "--end", help="last date YYYY-MM-DD (inclusive)"),
    airflow: bool = typer.Option(False, "--airflow", help="use Airflow's native backfill (starts airflow standalone)"),
    port: int = typer.Option(None, "--port", help="API port of airflow standalone (default conf/airflow.yaml)"),
    start_standalone: bool = typer.Option(True, "--start-standalone/--no-start",
                                          help="start (and afterwards stop) a local airflow standalone"),
    keep_going: bool = typer.Option(False, "--keep-going", help="serial: go on with the next date after a failure"),
    timeout: float = typer.Option(4 * 3600, "--timeout", help="seconds to wait for the whole backfill"),
) -> None:
    """Backfill the daily pipeline from START to END (inclusive)."""
    try:
        dates = lake.date_range(start, end)
    except ValueError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2)
    if airflow:
        ok = _airflow_backfill(start, end, port, start_standalone, timeout)
    else:
        ok = _serial_backfill(dates, keep_going)
    raise typer.Exit(0 if ok else 1)


def _serial_backfill(dates: list[str], keep_going: bool) -> bool:
    from qp_core.commands.run import progress_printer

    try:
        target = steps.resolve_target()
    except steps.NoProductionModel as exc:
        console.print(f"[red]✗ {exc}[/]")
        return False
    console.print(f"[bold]serial backfill[/] {dates[0]} → {dates[-1]} ({len(dates)} dates), "
                  f"model {target.model_version}, namespace {target.namespace}")
    failed: list[str] = []
    t0 = time.monotonic()
    for dt in dates:
        console.rule(dt)
        try:
            # the target is re-resolved per date: a promotion mid-backfill applies from the next date on
            report = steps.run_day(dt, on_step=progress_printer("  "))
            console.print(f"[green]✓ {dt}[/] {report.seconds:.1f}s")
        except (process.StepFailed, FileNotFoundError, steps.NoProductionModel) as exc:
            failed.append(dt)
            console.print(f"[red]✗ {dt}: {exc}[/]")
            if not keep_going:
                break
    console.print(f"done in {time.monotonic() - t0:.0f}s; failed: {failed or 'none'}")
    return not failed


def _airflow_backfill(start: str, end: str, port: int | None, start_standalone: bool, timeout: float) -> bool:
    from qp_core.ops import airflow_local
    from qp_core.ops.airflow_settings import settings

    port = port or settings().api_port
    proc = None
    if start_standalone:
        proc = airflow_local.start_standalone(api_port=port)
        console.print(f"airflow standalone starting on port {port} (home {airflow_local.home_dir()}) …")
    try:
        airflow_local.wait_for_api(port, proc=proc, timeout=600)
        console.print(f"API up: http://localhost:{port}  — creating backfill {start} → {end}")

        def on_poll(states: dict[str, str]) -> None:
            console.print("  " + ", ".join(f"{d}: {s}" for d, s in sorted(states.items())) or "  (no runs yet)")

        states = airflow_local.native_backfill("qp_nearline_daily", start, end, api_port=port, timeout=timeout,
                                              on_poll=on_poll)
    finally:
        if proc is not None:
            airflow_local.stop_standalone(proc)
            console.print("airflow standalone stopped")
    ok = all(s == "success" for s in states.values())
    console.print(("[green]✓" if ok else "[red]✗") + f" backfill {start} → {end}: {states}[/]")
    return ok
