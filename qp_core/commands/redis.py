"""`qp redis start|stop|status|url`: the local redis-server used by the demo (see qp_core.ops.redis_server)."""

from __future__ import annotations

import typer
from rich.console import Console

from qp_core.ops import redis_server

app = typer.Typer(help="Start/stop the local redis-server used by the demo.", no_args_is_help=True)
console = Console()


@app.command()
def start(port: int = typer.Option(None, help="TCP port (default: a free one).")) -> None:
    """Start (or reuse) a daemon on 127.0.0.1 and record its URL in $QP_HOME/run/redis.url."""
    try:
        server = redis_server.start(port=port)
    except redis_server.RedisServerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"redis-server running at [bold]{server.url}[/bold] (pid {server.pid}, dir {server.run_dir})")
    console.print(f"URL recorded in {redis_server.url_file()}; stop with `qp redis stop`.")


@app.command()
def stop() -> None:
    """Shut the local server down (data saved under $QP_HOME/run/redis/data)."""
    if redis_server.stop():
        console.print("redis-server stopped")
    else:
        console.print("no local redis-server was running")


@app.command()
def status() -> None:
    """Exit 0 and print the URL if the local server answers, else exit 1."""
    server = redis_server.status()
    if server is None:
        console.print("not running")
        raise typer.Exit(1)
    console.print(f"running at {server.url} (pid {server.pid}, binary {server.binary})")


@app.command()
def url() -> None:
    """Print the local server's URL only (for `export QP_REDIS_URL=$(qp redis url)`)."""
    server = redis_server.status()
    if server is None:
        raise typer.Exit(1)
    typer.echo(server.url)
