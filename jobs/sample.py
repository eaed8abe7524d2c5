"""Sample job: raw/query_log/dt=D -> curated/quarantine/dt=D + curated/query_sample/dt=D.

    spark-submit jobs/sample.py --dt 2026-11-01 --namespace m1-r2 [--previous-namespace m0-r2]
    python -m jobs.sample --dt 2026-11-01 --namespace m1-r2
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.sample", description=__doc__.splitlines()[0])
    p.add_argument("--dt", required=True, help="partition date YYYY-MM-DD")
    p.add_argument("--namespace", required=True, help="target KV namespace (its lake manifest says what it holds)")
    p.add_argument("--previous-namespace", default=None,
                   help="namespace live now; if --namespace has no manifest yet, everything is regenerated")
    p.add_argument("--budget", type=int, default=None, help="override conf/sampling.yaml daily_budget")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, spark=None):
    from qp_core.nearline import sample
    from qp_core.nearline.settings import load_sampling_settings
    from qp_core.ops.process import setup_job_logging
    from qp_core.ops.spark import session_scope

    setup_job_logging()
    args = parse_args(argv)
    settings = load_sampling_settings(daily_budget=args.budget)
    with session_scope(f"qp-sample-{args.dt}", spark) as session:
        return sample.run(session, args.dt, args.namespace, settings, args.previous_namespace or None)


if __name__ == "__main__":
    main(sys.argv[1:])
