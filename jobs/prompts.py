"""Prompts job: sample + context of dt=D -> curated/prompts/dt=D/shard=NNNNN + _manifest.json.

    spark-submit jobs/prompts.py --dt 2026-11-01 --rules-mode compact [--shards 4]
    python -m jobs.prompts --dt 2026-11-01 --rules-mode full
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.prompts", description=__doc__.splitlines()[0])
    p.add_argument("--dt", required=True, help="partition date YYYY-MM-DD")
    p.add_argument("--rules-mode", choices=("compact", "full"), default=None,
                   help="how the business rules are rendered (default: conf/sampling.yaml rules_mode)")
    p.add_argument("--shards", type=int, default=None,
                   help="number of shards (default: rows / conf/sampling.yaml shard_size)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, spark=None):
    from qp_core.nearline import prompts
    from qp_core.nearline.settings import load_sampling_settings
    from qp_core.ops.process import setup_job_logging
    from qp_core.ops.spark import session_scope

    setup_job_logging()
    args = parse_args(argv)
    settings = load_sampling_settings()
    with session_scope(f"qp-prompts-{args.dt}", spark) as session:
        return prompts.run(session, args.dt, settings, rules_mode=args.rules_mode, shards=args.shards)


if __name__ == "__main__":
    main(sys.argv[1:])
