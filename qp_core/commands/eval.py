"""`qp eval` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="eval commands", no_args_is_help=True)
