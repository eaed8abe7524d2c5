"""`qp kv get|info|activate|rollback|pin|unpin|retire|revive|janitor|reconcile`: read and operate the KV store.

What each command does to the pointer and the registry: docs/operations.md (Rollback); spec: docs/kv-spec.md.
"""

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
    if data["pinned"]:
        pin = data["pinned"]
        console.print(f"[yellow]pinned[/yellow] to {pin['ns']} by {pin.get('by')} at {pin.get('at')} "
                      f"{pin.get('reason') or ''} (registry production then: {pin.get('registry_version')})")
    table = Table("namespace", "status", "model", "rules", "prompt", "keys", "coverage", "last_dt", "created",
                  "deleted after", box=None)
    for ns, meta in data["namespaces"].items():
        table.add_row(
            ("* " if meta["active"] else "") + ns, meta.get("status", ""), meta.get("model_version", ""),
            meta.get("rules_version", "")[:10], meta.get("prompt_version", ""), meta.get("key_count", ""),
            meta.get("coverage", ""), meta.get("last_dt", ""), meta.get("created", ""),
            _when(meta.get("retire_deadline")),
        )
    console.print(table)


def _when(unix: str | None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(int(unix), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if unix else ""


def _admin(url: str | None):
    from qp_core.kv import KVAdmin

    return KVAdmin(url)


def _operate(fn):
    """Run ``fn()`` turning configuration, refusal and connection errors into a red line and exit 2."""
    import redis

    from qp_core.kv import KVConfigError, KVError

    try:
        return fn()
    except (KVConfigError, KVError, redis.RedisError) as exc:
        raise _fail(exc) from exc


def _production_version() -> str | None:
    from qp_core.nearline.publish import production_version

    return production_version()


@app.command()
def activate(
    namespace: str = typer.Argument(..., help="Namespace to make live."),
    min_coverage: float = typer.Option(None, help="Coverage gate (default conf/kv.yaml min_coverage)."),
    force: bool = typer.Option(False, help="Skip the coverage gate."),
    unpin: bool = typer.Option(False, help="Lift a pin that holds the pointer on another namespace."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Flip the pointer to NAMESPACE if its coverage gate passes (exit 1 if refused); the previous one is retired."""
    result = _operate(lambda: _admin(url).activate(namespace, min_coverage, force=force, unpin=unpin))
    typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    if not result.activated and result.reason != "already active":
        raise typer.Exit(1)


@app.command()
def rollback(
    reason: str = typer.Option("", help="Why (recorded in the pin and the event log)."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Point readers back at the previous namespace and PIN it; the one left is retired (deleted after retired_ttl_s).

    The registry is not touched. The daily run will not flip the pointer away until `qp kv unpin` or the
    registry's production model changes (`qp train promote` / `qp train rollback`).
    """
    version = _production_version()
    result = _operate(lambda: _admin(url).rollback(reason=reason, registry_version=version))
    console.print(f"rolled back: {result.previous} -> [bold]{result.namespace}[/bold] (pinned; registry production "
                  f"{version})")


@app.command()
def pin(
    namespace: str = typer.Argument(None, help="Namespace to hold the pointer on (default: the active one)."),
    reason: str = typer.Option("", help="Why (shown by `qp kv info`)."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Hold the pointer on the active namespace: the daily run publishes but does not activate."""
    version = _production_version()
    typer.echo(json.dumps(_operate(lambda: _admin(url).pin(namespace, reason=reason, registry_version=version))))


@app.command()
def unpin(url: str = typer.Option(None, help=URL_HELP)) -> None:
    """Lift the pin: the next daily run may activate its namespace again (coverage gate permitting)."""
    was = _operate(lambda: _admin(url).unpin())
    typer.echo(json.dumps({"unpinned": was}))


@app.command()
def retire(
    namespace: str = typer.Argument(..., help="Inactive namespace to schedule for deletion."),
    ttl: int = typer.Option(None, help="Seconds until the janitor may delete it (default retired_ttl_s)."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Schedule an inactive namespace for deletion (refused for the active one); no key gets a TTL."""
    deadline = _operate(lambda: _admin(url).retire(namespace, ttl))
    typer.echo(json.dumps({"namespace": namespace, "retire_deadline": deadline, "deleted_after": _when(deadline)}))


@app.command()
def revive(
    namespace: str = typer.Argument(..., help="Retired namespace to keep."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Cancel a retired namespace's deletion (refused once the janitor started deleting it)."""
    status = _operate(lambda: _admin(url).revive(namespace))
    typer.echo(json.dumps({"namespace": namespace, "status": status}))


@app.command()
def janitor(
    budget: float = typer.Option(None, help="Seconds this run may spend (default janitor_budget_s)."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Delete retired namespaces whose deadline passed (SCAN + UNLINK in batches; resumable, idempotent)."""
    from qp_core.kv import Janitor

    report = _operate(lambda: Janitor(_admin(url)).run(budget_s=budget))
    typer.echo(json.dumps(report.to_dict()))


@app.command()
def reconcile(
    namespace: str = typer.Argument(..., help="Namespace whose lake manifest to check against Redis."),
    url: str = typer.Option(None, help=URL_HELP),
) -> None:
    """Drop lake-manifest entries the namespace no longer holds in Redis (the next sample selects them again)."""
    from qp_core.nearline.publish import reconcile_target

    typer.echo(json.dumps(_operate(lambda: reconcile_target(namespace, url))))
