"""`qp redis` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="redis commands", no_args_is_help=True)
