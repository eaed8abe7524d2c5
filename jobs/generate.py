"""Generate job: curated/prompts/dt=D → engine → curated/generations/dt=D/model=V/shard=N.parquet.

    python -m jobs.generate --dt 2026-11-01 [--shard 3] [--model-dir DIR] [--model-version V] [--backend hf]

Without --model-dir the registry's production model is used. Finished shards are skipped, so rerunning after
a kill resumes where it stopped. Prints the generation report as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.generate", description=__doc__.splitlines()[0])
    p.add_argument("--dt", required=True, help="partition date YYYY-MM-DD")
    p.add_argument("--shard", type=int, action="append", default=None,
                   help="shard number (repeatable); default: every shard of the date")
    p.add_argument("--model-dir", default=None, help="model directory (default: the registry's production model)")
    p.add_argument("--model-version", default=None, help="version label (default: meta.json version or folder name)")
    p.add_argument("--backend", choices=["vllm", "hf"], default=None, help="engine (default: conf/generation.yaml)")
    p.add_argument("--profile", default=None, help="model profile (default: the model's meta.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p.parse_args(argv)


def resolve_model(model_dir: str | None, model_version: str | None) -> tuple[str, str | None]:
    """(model dir, version): the given directory, else the production model of the registry."""
    if model_dir:
        return model_dir, model_version
    try:
        from qp_core import registry
    except ImportError as exc:  # pragma: no cover - registry not installed in a trimmed deployment
        raise SystemExit(f"--model-dir is required: no model registry ({exc})") from exc
    record = registry.production()
    if record is None:
        raise SystemExit("no production model in the registry: pass --model-dir or promote a model")
    return record.path, model_version or record.version


def main(argv: list[str] | None = None) -> dict:
    from qp_core.nearline.generate import run_generation
    from qp_core.nearline.settings import load_generation_settings
    from qp_core.ops.process import setup_job_logging

    setup_job_logging()
    args = parse_args(argv)
    model_dir, version = resolve_model(args.model_dir, args.model_version)
    settings = load_generation_settings()
    if args.backend:
        settings.engine.backend = args.backend
    report = run_generation(args.dt, model_dir, version, args.shard, settings, progress=not args.no_progress,
                            profile=args.profile)
    out = report.to_dict()
    print(json.dumps({k: v for k, v in out.items() if k != "shards"}, ensure_ascii=False))
    return out


if __name__ == "__main__":  # vLLM spawns worker processes: this guard is required
    main(sys.argv[1:])
