"""`qp kv` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="kv commands", no_args_is_help=True)
