"""`qp kv get|info|activate|rollback`: read and operate the KV store (spec: docs/kv-spec.md)."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Read and operate the Redis KV store.", no_args_is_help=True)
# piped output (CI logs, `| less`) gets a wide fixed width instead of Rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 160)
URL_HELP = "Redis URL (default: QP_REDIS_URL, conf/kv.yaml, then $QP_HOME/run/redis.url)."


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]{exc}[/red]")
    return typer.Exit(2)


@app.command()
def get(
    query: str = typer.Argument(..., help="Raw query text (normalised and hashed like the pipeline does)."),
    url: str = typer.Option(None, help=URL_HELP),
    pretty: bool = typer.Option(False, help="Indent the JSON."),
) -> None:
    """Print the stored result JSON for QUERY from the active namespace; exit 1 on a miss."""
    import redis

    from qp_core.kv import KVConfigError, KVReadError, QPClient

    try:  # strict: an operator wants the error, not the service's silent None
        result = QPClient(url, strict=True).get(query)
    except (KVConfigError, KVReadError, redis.RedisError) as exc:
        raise _fail(exc) from exc
    if result is None:
        typer.echo("miss", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2 if pretty else None))


@app.command()
def info(
    url: str = typer.Option(None, help=URL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Active pointer, pointer history and every namespace's metadata."""
    import redis

    from qp_core.kv import KVAdmin, KVConfigError

    try:
        data = KVAdmin(url).info()
    except (KVConfigError, redis.RedisError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    console.print(f"active: [bold]{data['active']}[/bold]   history: {data['history']}")
    table = Table("namespace", "status", "model", "rules", "prompt", "keys", "coverage", "last_dt", "created", "ttl",
                  box=None)
    for ns, meta in data["namespaces"].items():
        table.add_row(
            ("* " if meta["active"] else "") + ns, meta.get("status", ""), meta.get("model_version", ""),
            meta.get("rules_version", "")[:10], meta.get("prompt_version", ""), meta.get("key_count", ""),
            meta.get("coverage", ""), meta.get("last_dt", ""), meta.get("created", ""),
            "" if meta["ttl_s"] < 0 else f"{meta['ttl_s']}s",
        )
    console.print(table)


@app.command()
def activate(
    namespace: str = typer.Argument(..., help="Namespace to make live."),
    min_coverage: float = typer.Option(None, help="Coverage gate (default conf/kv.yaml min_coverage)."),
    force: bool = typer.Option(False, help="Skip the coverage gate."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Flip the pointer to NAMESPACE if its coverage gate passes (exit 1 if refused)."""
    import redis

    from qp_core.kv import KVAdmin, KVConfigError, KVError

    try:
        result = KVAdmin(url).activate(namespace, min_coverage, force=force)
    except (KVConfigError, KVError, redis.RedisError) as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    if not result.activated and result.reason != "already active":
        raise typer.Exit(1)


@app.command()
def rollback(url: str = typer.Option(None, help=URL_HELP)) -> None:
    """Point readers back at the previous namespace; the rolled-back one gets the retired TTL."""
    import redis

    from qp_core.kv import KVAdmin, KVConfigError, KVError

    try:
        result = KVAdmin(url).rollback()
    except (KVConfigError, KVError, redis.RedisError) as exc:
        raise _fail(exc) from exc
    console.print(f"rolled back: {result.previous} -> [bold]{result.namespace}[/bold]")
