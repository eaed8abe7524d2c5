"""Validate job: curated/generations/dt=D/model=V → curated/qp_results/dt=D (+ _quality.json), quality gate.

    python -m jobs.validate --dt 2026-11-01 [--model-version V] [--min-valid-rate 0.8]

Exits 2 when the quality gate fails (nothing is left for the publish step), 3 when generations are missing.
Prints the quality report as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.validate", description=__doc__.splitlines()[0])
    p.add_argument("--dt", required=True, help="partition date YYYY-MM-DD")
    p.add_argument("--model-version", default=None, help="model version (default: the registry's production model)")
    p.add_argument("--min-valid-rate", type=float, default=None, help="quality gate (default: conf/generation.yaml)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import logging

    from qp_core.nearline.settings import load_generation_settings
    from qp_core.nearline.validate import IncompleteGenerations, QualityGateFailed, run_validation
    from qp_core.ops.process import setup_job_logging

    setup_job_logging()
    args = parse_args(argv)
    version = args.model_version
    if not version:
        from qp_core import registry

        record = registry.production()
        if record is None:
            raise SystemExit("no production model in the registry: pass --model-version")
        version = record.version
    settings = load_generation_settings().validation
    if args.min_valid_rate is not None:
        settings.min_valid_rate = args.min_valid_rate
    try:
        outcome = run_validation(args.dt, version, settings)
    except QualityGateFailed as exc:
        print(json.dumps(exc.report, ensure_ascii=False))
        logging.getLogger("jobs.validate").error("%s", exc)
        sys.exit(2)
    except IncompleteGenerations as exc:
        logging.getLogger("jobs.validate").error("%s", exc)
        sys.exit(3)
    print(json.dumps(outcome.report, ensure_ascii=False))
    return outcome.report


if __name__ == "__main__":
    main(sys.argv[1:])
