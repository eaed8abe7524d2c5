"""`qp world` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="world commands", no_args_is_help=True)
