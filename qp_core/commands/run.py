"""`qp run` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="run commands", no_args_is_help=True)
