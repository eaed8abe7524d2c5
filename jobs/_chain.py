"""What every training-stage job shares: its argparse and the one-stage entry point.

    python -m jobs.train_sft --stage 1 --section tiny [--run-id ID]

Each ``jobs/<stage>.py`` calls :func:`stage_main`, which builds the same ``ChainContext`` as ``qp train`` and
runs one resumable stage, printing a JSON summary on stdout (what the Airflow task log shows last).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


def stage_argparser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"jobs.{stage}", description=f"Training chain stage {stage!r}.")
    p.add_argument("--section", default=None, help="conf/training.yaml section (default: default_section)")
    p.add_argument("--profile", default=None, help="model profile (picks the section named like it)")
    p.add_argument("--run-id", default=None, help="run folder name (default <section>-<dt>)")
    p.add_argument("--dt", default=None, help="run date YYYY-MM-DD (default: newest raw/query_log partition)")
    p.add_argument("--rerun", action="store_true", help="run again even if the stage finished")
    p.add_argument("--no-context", action="store_true", help="ablation: prompts without history/notes")
    return p


def stage_main(stage: str, argv: list[str] | None = None, **stage_kwargs: Any) -> dict[str, Any]:
    """Entry point of ``jobs/<stage>.py``: one stage of one run, resumable, JSON summary on stdout."""
    from qp_core.ops.process import setup_job_logging
    from qp_core.training.run import make_context
    from qp_core.training.stages import run_stage

    setup_job_logging()
    args = stage_argparser(stage).parse_args(argv)
    ctx = make_context(args.section, profile=args.profile, run_id=args.run_id, dt=args.dt,
                       overrides={"context": False} if args.no_context else None,
                       progress=lambda m: logger.info("%s", m))
    info = run_stage(ctx, stage, rerun=args.rerun, **stage_kwargs)
    print(json.dumps({"run_id": ctx.run_id, "run_dir": str(ctx.run_dir), "stage": stage, **info},
                     ensure_ascii=False, default=str))
    return info
