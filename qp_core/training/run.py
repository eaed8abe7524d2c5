"""A training run's folder and bookkeeping: settings, the run id, which stage finished, where its model is.

Why apart from the stages (:mod:`qp_core.training.stages`): the report, the ablations, the CLI and the jobs
all read a run's state (``<run_dir>/<stage>/stage.json``) without running anything; this module is that
state, nothing more. A run id defaults to ``<section>-<dt>`` so a rerun of the same run resumes.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from qp_core import paths
from qp_core.lake import ANNOTATIONS, GOLDEN, QUERY_LOG, dataset
from qp_core.training.config import TrainingSettings, load_training_settings, section_for_profile

logger = logging.getLogger(__name__)

STAGES = ("aux", "base", "sft1", "sft2", "filter", "grpo", "evaluate", "promote")
MODEL_STAGES = ("base", "sft1", "sft2", "grpo")
EVAL_ALIASES = {"stage0": "base", "stage1": "sft1", "stage2": "sft2", "stage3": "grpo", "grpo": "grpo"}


@dataclass
class ChainContext:
    settings: TrainingSettings
    run_id: str
    run_dir: Path
    dt: str
    progress: Callable[[str], None] = field(default=lambda msg: logger.info("%s", msg))

    @property
    def profile(self):
        from qp_core.training.modeling import load_profile

        return load_profile(self.settings.profile)

    @property
    def rules_mode(self) -> str:
        return self.profile.rules_mode

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


def training_root() -> Path:
    return paths.qp_home() / "training"


def newest_dt(dataset: str) -> str | None:
    return paths.newest_partition(dataset)


def make_context(
    section: str | None = None,
    *,
    profile: str | None = None,
    run_id: str | None = None,
    dt: str | None = None,
    overrides: dict[str, Any] | None = None,
    fresh: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ChainContext:
    """Settings + run folder (generating the default world first if the lake has none). ``run_id`` defaults
    to ``<section>-<dt>`` so a rerun of the same run resumes."""
    if section is None and profile is not None:
        section = section_for_profile(profile)
    over = dict(overrides or {})
    if profile is not None:
        over.setdefault("profile", profile)
    settings = load_training_settings(section, over)
    ensure_world()  # first: the run id is named after the lake's newest date
    dt = dt or newest_dt(QUERY_LOG) or newest_dt(ANNOTATIONS) or time.strftime("%Y-%m-%d")
    run_id = run_id or f"{settings.section}-{dt}" + ("" if settings.context else "-noctx")
    run_dir = training_root() / "runs" / run_id
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(settings.model_dump_json(indent=1), encoding="utf-8")
    ctx = ChainContext(settings, run_id, run_dir, dt)
    if progress is not None:
        ctx.progress = progress
    return ctx


def stage_done(ctx: ChainContext, stage: str) -> dict[str, Any] | None:
    path = ctx.stage_dir(stage) / "stage.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def mark_done(ctx: ChainContext, stage: str, info: dict[str, Any]) -> dict[str, Any]:
    d = ctx.stage_dir(stage)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "stage.json"
    existing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    existing.update(info)
    existing.setdefault("stage", stage)
    existing["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    path.write_text(json.dumps(existing, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    return existing


def model_dir(ctx: ChainContext, stage: str) -> Path:
    info = stage_done(ctx, stage)
    if info is None:
        raise RuntimeError(f"stage {stage!r} of run {ctx.run_id} has not finished (run it first)")
    return Path(info["model_dir"])


def ensure_world() -> None:
    """Generate the default synthetic world when the lake has no annotations (fresh clone)."""
    if dataset(ANNOTATIONS).exists() and dataset(GOLDEN).exists():
        return
    from qp_core import world

    logger.info("no raw/annotations in %s: generating the default world", paths.lake_root())
    world.generate(paths.lake_root())


def training_annotations(ctx: ChainContext) -> list[dict[str, Any]]:
    """Unified annotations, golden queries excluded (defensive: the world keeps them disjoint already)."""
    from qp_core.normalize import normalize_query
    from qp_core.training.data import annotation_rows, read_dataset

    rows = annotation_rows()
    golden = {normalize_query(r["query"]) for r in read_dataset(GOLDEN, columns=["query"])}
    return [r for r in rows if normalize_query(r["query"]) not in golden]
