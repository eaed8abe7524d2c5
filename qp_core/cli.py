"""`qp`: the command-line interface. Thin: each sub-command module parses options and calls qp_core."""

from __future__ import annotations

import logging
import os

import typer

from qp_core.commands import backfill, demo, eval, kv, redis, run, train, world
from qp_core.ops.process import LOG_FORMAT

app = typer.Typer(help="Nearline query processing with one generative model.", no_args_is_help=True)
app.add_typer(world.app, name="world", help="Synthetic SNS search world (stand-in for production data).")
app.add_typer(eval.app, name="eval", help="Evaluate models on the golden set.")
app.add_typer(kv.app, name="kv", help="Read and operate the Redis KV store.")
app.add_typer(redis.app, name="redis", help="Start/stop the local redis-server used by the demo.")
app.add_typer(run.app, name="run", help="Run single pipeline steps for a date.")
app.add_typer(backfill.app, name="backfill", help="Serial backfill of the daily pipeline over a date range.")
app.add_typer(train.app, name="train", help="Training chain: aux data, SFT, GRPO, evaluation, promotion.")
app.add_typer(demo.app, name="demo", help="End-to-end demo of the daily pipeline.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, os.environ.get("QP_LOG_LEVEL", "INFO")),
        format=LOG_FORMAT,
    )


if __name__ == "__main__":
    app()
