"""`qp demo` commands (placeholder until its owner lands it)."""

import typer

app = typer.Typer(help="demo commands", no_args_is_help=True)
