"""`qp train` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="train commands", no_args_is_help=True)
