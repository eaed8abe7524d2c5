"""`qp demo` (`make demo`): the daily pipeline end to end on a fresh machine, through Airflow.

1. start a real redis-server (``qp_core.ops.redis_server``; it stays up afterwards),
2. generate the synthetic world unless the lake already has one,
3. obtain a model: the registry's production model, else ``qp train quick`` (tiny profile, minutes on CPU),
4. run ``qp_nearline_daily`` for one date through Airflow (``airflow dags test`` in ``$QP_HOME/airflow``),
5. print the quality report and entries read back through ``QPClient``.

Afterwards ``qp kv get QUERY`` works from the same shell without flags until ``make stop``.
Wall time and peak memory (whole process tree, sampled) are printed at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from qp_core import lake, paths
from qp_core.ops.process import PeakMemory, apply_env_defaults, run_command

app = typer.Typer(help="End-to-end demo of the daily pipeline.", invoke_without_command=True)
console = Console()


def _step(n: int, text: str) -> None:
    console.rule(f"[bold cyan]{n}/5[/] {text}", align="left")


def _newest_log_date() -> str | None:
    return lake.newest_partition(lake.QUERY_LOG)


def _airflow_progress(line: str) -> str | None:
    """Pick the lines that say which step starts/ends from the (very verbose) Airflow output."""
    import re

    m = re.search(r"\[([a-z_]+(?:\[[0-9, ]*\])?)\] exit (\d+) after ([0-9.]+)s", line)
    if m:
        return f"  {'✓' if m.group(2) == '0' else '✗'} {m.group(1):<22} {float(m.group(3)):6.1f}s"
    m = re.search(r"\[([a-z_]+(?:\[[0-9, ]*\])?)\] \$ ", line)
    if m and m.group(1) != "airflow":
        return f"  → {m.group(1)} …"
    if "Marking run" in line or ("DagRun Finished" in line) or "dag_run_state=" in line:
        return "  " + line.strip()[:160]
    if "quality gate failed" in line.lower():
        return "  " + line.strip()[:200]
    return None


@app.callback()
def demo(
    dt: str = typer.Option(None, "--dt", help="date to process (default: newest query-log partition)"),
    budget: int = typer.Option(500, "--budget", help="queries generated for the date, most frequent first "
                               "(0: conf/sampling.yaml daily_budget); keeps the demo within minutes on 2 cores"),
    samples: int = typer.Option(5, "--samples", help="KV entries to print"),
    strict: bool = typer.Option(False, "--strict", help="keep the configured quality gate even when the production "
                                "model's own golden valid-JSON rate is below it (the run then publishes nothing)"),
) -> None:
    """Run the whole daily pipeline for one date through Airflow and read the results back."""
    t_start = time.monotonic()
    os.environ["QP_HOME"] = str(paths.qp_home())  # absolute for every child process
    apply_env_defaults()
    if budget:
        os.environ["QP__SAMPLING__DAILY_BUDGET"] = str(budget)
    console.print(f"[bold]QP nearline demo[/]  QP_HOME={paths.qp_home()}")
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t = time.monotonic()
        out = fn(*args)
        timings[name] = time.monotonic() - t
        return out

    with PeakMemory() as mem:
        _step(1, "Redis")
        server = timed("redis", _start_redis)
        _step(2, "synthetic world")
        timed("world", _ensure_world)
        dt = dt or _newest_log_date()
        if not dt:
            console.print("[red]no query-log partition in the lake[/]")
            raise typer.Exit(1)
        _step(3, "model")
        timed("model", _ensure_model, strict)
        _step(4, f"qp_nearline_daily for dt={dt} through Airflow")
        timed("airflow", _run_dag, dt)
        _step(5, "results")
        _print_quality(dt)
        _print_samples(dt, samples)
    total = time.monotonic() - t_start
    console.rule("done")
    console.print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s")
    console.print(f"peak memory (process tree, sampled): {mem.peak / 2**30:.2f} GiB")
    console.print(f"Redis stays up at {server.url}. Try:  [bold]qp kv get '<query>'[/]   ·   stop: [bold]make stop[/]")


def _start_redis():
    """1. a real redis-server that stays up after the demo (its URL file makes ``qp kv get`` work)."""
    from qp_core.ops import redis_server

    server = redis_server.start()
    console.print(f"redis-server at {server.url} (pid {server.pid}); URL recorded in {redis_server.url_file()}")
    return server


def _ensure_world() -> None:
    """2. the synthetic world, unless the lake already has one."""
    if _newest_log_date() and lake.dataset(lake.ANNOTATIONS).exists():
        console.print(f"world present in {paths.lake_root()}")
        return
    from qp_core import world

    console.print(f"generating the synthetic world into {paths.lake_root()} …")
    info = world.generate(paths.lake_root(), progress=lambda m: console.print(f"  {m}"))
    console.print(f"  done: { {k: v for k, v in info.items() if not isinstance(v, (dict, list))} }")


def _ensure_model(strict: bool) -> None:
    """3. the registry's production model, else ``qp train quick`` (tiny profile, minutes on CPU)."""
    from qp_core import registry

    record = registry.production()
    if record is None:
        console.print("no production model: bootstrapping one with `qp train quick` (tiny profile) …")
        rc = run_command([sys.executable, "-m", "qp_core.cli", "train", "quick"], check=False, label="train quick",
                         on_line=lambda line: console.print(line, markup=False, highlight=False))
        record = registry.production()
        if rc != 0 or record is None:
            console.print("[red]✗ qp train quick did not produce a production model[/]")
            raise typer.Exit(1)
    console.print(f"production model {record.version} ({record.profile}, rules {record.rules_mode}) at {record.path}")
    promotion = registry.promotion()
    if promotion.get("forced"):
        console.print(
            f"[yellow]! {record.version} went live without passing the promotion gate (a bootstrap): "
            f"{'; '.join(promotion.get('gate', []))}. Its answers are contract-valid (query grammar) but "
            f"behind the legacy pipeline; `make train` (~21 min) trains one that passes the gate.[/]"
        )
    if not strict:
        _relax_gate_for_weak_model(record)


def _run_dag(dt: str) -> None:
    """4. one run of ``qp_nearline_daily`` through ``airflow dags test``; progress lines echoed, full log kept."""
    from qp_core.ops import airflow_local

    t = time.monotonic()
    home = airflow_local.ensure_db()
    log_path = home / f"demo-{dt}.log"
    console.print(f"airflow dags test in {home} (full log: {log_path})")
    cmd = airflow_local.airflow_cli() + ["dags", "test", "qp_nearline_daily", dt, "-c", json.dumps({"dt": dt})]
    run_command(cmd, env=airflow_local.airflow_env(home), check=False, label="airflow", log_path=log_path,
                on_line=_echo_progress)
    state = airflow_local.last_run_state("qp_nearline_daily", home=home)
    console.print(f"DAG run state: [bold]{state}[/] ({time.monotonic() - t:.0f}s)")
    if state != "success":
        console.print(f"[red]✗ the DAG run did not succeed; see {log_path}[/]")
        raise typer.Exit(1)


def _echo_progress(line: str) -> None:
    text = _airflow_progress(line)
    if text:
        console.print(text, markup=False, highlight=False)


def _relax_gate_for_weak_model(record) -> None:
    """A CPU bootstrap model (`qp train quick`) may not yet produce valid JSON (docs/training.md). The demo
    then shows the pipeline with the legacy fallback (src=fallback) instead of stopping at the quality gate;
    the gate itself is unchanged for real runs, and ``--strict`` keeps it here too."""
    from qp_core.nearline.settings import load_generation_settings

    threshold = load_generation_settings().validation.min_valid_rate
    golden_valid = (record.metrics or {}).get("valid_rate")
    if golden_valid is None or golden_valid >= threshold:
        return
    os.environ["QP__GENERATION__VALIDATION"] = json.dumps({"min_valid_rate": 0.0})
    console.print(
        f"[yellow]! model {record.version} produced valid JSON for {golden_valid:.0%} of the golden set "
        f"(quality gate: {threshold:.0%}). For this demo the gate is lowered to 0: rows whose output fails "
        f"validation are served from the legacy pipeline (src=fallback). Train a better model with "
        f"`make train`, or pass --strict to keep the gate.[/]"
    )


def _print_quality(dt: str) -> None:
    report = lake.read_quality(dt)
    if report is None:
        console.print(f"[yellow]no quality report at {lake.quality_path(dt)}[/]")
        return
    table = Table(title=f"quality report dt={dt}", show_header=False)
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)[:120]
        table.add_row(str(key), str(value))
    console.print(table)


def _print_samples(dt: str, n: int) -> None:
    import pyarrow.parquet as pq

    from qp_core.kv import QPClient

    sample_dir = lake.partition(lake.QUERY_SAMPLE, dt)
    queries: list[str] = []
    if sample_dir.exists():
        rows = pq.read_table(str(sample_dir), columns=["query_norm", "rank"]).to_pylist()
        queries = [r["query_norm"] for r in sorted(rows, key=lambda r: r["rank"])][:n]
    if not queries:
        console.print("[yellow]no sampled queries for this date[/]")
        return
    with QPClient() as client:
        ns, results = client.mget_with_namespace(queries)
    console.print(f"read back through QPClient (active namespace {ns}):")
    hits = 0
    for q, res in zip(queries, results):
        hits += res is not None
        console.print(f"[bold]{q}[/] → " + (json.dumps(res, ensure_ascii=False) if res else "[red]miss[/]"),
                      highlight=False)
    console.print(f"{hits}/{len(queries)} hits")
