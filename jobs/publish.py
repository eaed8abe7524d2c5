"""Publish job: curated/qp_results/dt=D -> Redis namespace NS (+ curated/kv_manifest/ns=NS), then the pointer.

    python -m jobs.publish --dt 2026-11-01 --namespace n1a2b3c4d5e6 [--url redis://...] [--no-activate]

Runs under NS's publish lease (a second attempt is refused while the first holds it). The pointer flips
to NS only when conf/kv.yaml `activate_after_publish` is on, no rollback pin holds it on another
namespace, and NS passes the coverage gate; then the janitor runs (docs/kv-spec.md §5). Prints the
publish report as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.publish", description=__doc__.splitlines()[0])
    p.add_argument("--dt", required=True, help="partition date YYYY-MM-DD")
    p.add_argument("--namespace", default=None, help="target namespace (default: namespace_for the rows' versions)")
    p.add_argument("--url", default=None, help="Redis URL (default: QP_REDIS_URL, conf/kv.yaml, $QP_HOME/run/redis.url)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--activate", dest="activate", action="store_true", default=None,
                     help="flip the pointer if the coverage gate passes (default: conf/kv.yaml)")
    act.add_argument("--no-activate", dest="activate", action="store_false", help="never flip the pointer")
    p.add_argument("--min-coverage", type=float, default=None, help="coverage gate (default: conf/kv.yaml)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from qp_core.nearline.publish import publish_day
    from qp_core.ops.process import setup_job_logging

    setup_job_logging()
    args = parse_args(argv)
    result = publish_day(args.dt, args.namespace, url=args.url, activate=args.activate,
                         min_coverage=args.min_coverage).to_dict()
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
