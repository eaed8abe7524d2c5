"""`qp backfill` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="backfill commands", no_args_is_help=True)
