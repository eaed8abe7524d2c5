"""Context job: curated/query_sample/dt=D (+ log lookback, notes) -> curated/query_context/dt=D.

    spark-submit jobs/context.py --dt 2026-11-01
    python -m jobs.context --dt 2026-11-01
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.context", description=__doc__.splitlines()[0])
    p.add_argument("--dt", required=True, help="partition date YYYY-MM-DD")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, spark=None):
    from qp_core.nearline import context
    from qp_core.nearline.settings import load_sampling_settings
    from qp_core.ops.process import setup_job_logging
    from qp_core.ops.spark import session_scope

    setup_job_logging()
    args = parse_args(argv)
    settings = load_sampling_settings()
    with session_scope(f"qp-context-{args.dt}", spark) as session:
        return context.run(session, args.dt, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
