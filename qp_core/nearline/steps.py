"""The daily nearline pipeline as one ordered list of steps, shared by every way of running it.

Why: the Airflow DAG (``dags/qp_nearline_daily.py``), ``qp run`` and the serial ``qp backfill`` must run
*exactly* the same commands, so a date processed on a laptop and a date processed by Airflow are the same
thing. Each :class:`Step` is a job name (``jobs/<job>.py``), how it is launched (``spark-submit`` or
``python -m``) and a builder of its command-line arguments from the partition date and the
:class:`Target` (model + KV namespace resolved once per run from the registry). Everything here is
stdlib + ``qp_core``; no Airflow, no Spark, no torch at import time.

Dates and shards come from :mod:`qp_core.lake`, the subprocess runner from :mod:`qp_core.ops.process`; the
training chain's stages are listed the same way in :mod:`qp_core.training.steps`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from qp_core import paths
from qp_core.lake import QUERY_LOG, check_date, log_partition_ready, prompt_shards
from qp_core.ops.process import run_command, subprocess_env

logger = logging.getLogger(__name__)


class NoProductionModel(RuntimeError):
    """The registry has no production model: the daily pipeline has nothing to serve."""


# ---------------------------------------------------------------------------------------------------
# What a run targets


@dataclass(frozen=True)
class Target:
    """The model a run serves and the KV namespace its results go to (resolved once per run)."""

    model_version: str
    model_dir: str
    rules_mode: str
    rules_version: str
    namespace: str
    active_namespace: str | None = None  # what readers see now (differs from namespace on a model change)
    profile: str | None = None  # the model's profile (conf/profiles): the engine's limits, read once here
    # a registered model that did not pass the promotion gate: its results are published into its own
    # namespace without flipping the pointer (readers keep what they see), for inspection and comparison
    candidate: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Target":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


CANDIDATE_ENV = "QP_CANDIDATE_VERSION"


def resolve_target(redis_url: str | None = None) -> Target:
    """Production model from the registry and its KV namespace (``qp_core.kv.namespace_for``).

    ``redis_url``: where to read the active namespace (the DAG passes the Airflow connection's URL; default:
    ``qp_core.kv.resolve_url``). With ``$QP_CANDIDATE_VERSION`` set, the run serves that registered (not
    promoted) model instead, as a candidate: published into its namespace, never activated (``qp demo`` on a
    fresh machine, when the bootstrap model is below the gate).
    """
    from qp_core import kv, registry

    candidate = os.environ.get(CANDIDATE_ENV) or None
    record = registry.get(candidate) if candidate else registry.production()
    if record is None:
        raise NoProductionModel(
            "no model in production in the registry "
            f"({paths.registry_root()}): run `qp train quick` (tiny bootstrap) or `qp train chain`"
        )
    from qp_core.prompt import PROMPT_VERSION

    rules_version = getattr(record, "rules_version", None) or _current_rules_version()
    namespace = kv.namespace_for(record.version, rules_version, PROMPT_VERSION)
    _reconcile_manifest(namespace, redis_url)
    return Target(
        model_version=str(record.version),
        model_dir=str(Path(record.path).resolve()),
        rules_mode=str(getattr(record, "rules_mode", "full") or "full"),
        rules_version=str(rules_version),
        namespace=str(namespace),
        active_namespace=_active_namespace(redis_url),
        profile=str(record.profile) if getattr(record, "profile", None) else None,
        candidate=bool(candidate),
    )


def _current_rules_version() -> str:
    from qp_core import rules

    return rules.rules_version()


def _reconcile_manifest(namespace: str, redis_url: str | None = None) -> None:
    """Drop lake-manifest entries the namespace no longer holds in Redis, so today's sample selects them again."""
    try:
        from qp_core.nearline.publish import reconcile_target

        counts = reconcile_target(namespace, redis_url)
        logger.info("KV manifest of %s reconciled with Redis: %s", namespace, counts)
    except Exception as exc:  # the publish step is where an unreachable Redis must fail, not here
        logger.warning("could not reconcile the KV manifest of %s with Redis: %s", namespace, exc)


def _active_namespace(redis_url: str | None = None) -> str | None:
    """The namespace the KV pointer names now; None when none is active or Redis is not reachable here."""
    try:
        from qp_core.kv import KVAdmin

        return KVAdmin(redis_url).active()
    except Exception as exc:  # the publish step is where an unreachable Redis must fail, not here
        logger.warning("could not read the active KV namespace: %s", exc)
        return None


# ---------------------------------------------------------------------------------------------------
# The steps


@dataclass(frozen=True)
class Step:
    """One pipeline step: ``jobs/<job>.py`` launched by ``runner`` with ``args(dt, target, shards)``.

    ``per_shard`` steps take the list of prompt shards they process (one Airflow mapped task per group).
    """

    name: str
    job: str
    runner: str  # "spark" (spark-submit) or "python" (python -m jobs.<job>)
    args: Callable[[str, Target, "list[int] | None"], list[str]]
    per_shard: bool = False
    doc: str = ""


def _dt_args(dt: str, target: Target, shard: int | None) -> list[str]:
    return ["--dt", dt]


def _sample_args(dt: str, target: Target, shard: int | None) -> list[str]:
    # the sample compares the day's queries with what the active namespace already holds
    args = ["--dt", dt, "--namespace", target.namespace]
    if target.active_namespace and target.active_namespace != target.namespace:
        args += ["--previous-namespace", target.active_namespace]  # model/rules changed: regenerate all
    return args


def _prompts_args(dt: str, target: Target, shard: int | None) -> list[str]:
    return ["--dt", dt, "--rules-mode", target.rules_mode]


def _generate_args(dt: str, target: Target, shards: list[int] | None) -> list[str]:
    if not shards:
        raise ValueError("generate runs on prompt shards: pass shards=[N, ...]")
    args = ["--dt", dt]
    for shard in shards:
        args += ["--shard", str(int(shard))]
    args += ["--model-dir", target.model_dir, "--model-version", target.model_version, "--no-progress"]
    return args + (["--profile", target.profile] if target.profile else [])


def _validate_args(dt: str, target: Target, shard: int | None) -> list[str]:
    return ["--dt", dt, "--model-version", target.model_version]


def _publish_args(dt: str, target: Target, shard: int | None) -> list[str]:
    return ["--dt", dt, "--namespace", target.namespace] + (["--no-activate"] if target.candidate else [])


STEPS: tuple[Step, ...] = (
    Step("sample", "sample", "spark", _sample_args, doc="normalise, quarantine, dedupe, choose the day's queries"),
    Step("context", "context", "spark", _dt_args, doc="rewrite history + candidate notes per query"),
    Step("prompts", "prompts", "spark", _prompts_args, doc="I ⊕ R ⊕ q ⊕ C prompts, sorted and sharded"),
    Step("generate", "generate", "python", _generate_args, per_shard=True, doc="vLLM batch generation per shard"),
    Step("validate", "validate", "python", _validate_args, doc="parse, validate, fallback, quality gate"),
    Step("publish", "publish", "python", _publish_args, doc="write the KV namespace, flip the pointer"),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEP_NAMES)}")


def command(step_: Step, dt: str, target: Target, shards: list[int] | None = None) -> list[str]:
    """The exact command line of one step (what the DAG task, ``qp run`` and ``qp backfill`` execute)."""
    check_date(dt)
    args = step_.args(dt, target, shards)
    if step_.runner == "spark":
        from qp_core.ops import spark

        return list(spark.submit_command(step_.job, args))
    return [sys.executable, "-m", f"jobs.{step_.job}", *args]


def command_env(step_: Step, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The step's environment: :func:`qp_core.ops.process.subprocess_env` (+ ``extra``), Spark's on top."""
    env = subprocess_env(extra)
    if step_.runner == "spark":
        from qp_core.ops import spark

        env = spark.submit_env(env)
    return env


def shard_groups(shards: list[int], tasks: int) -> list[list[int]]:
    """Split shards round-robin into at most ``tasks`` non-empty groups (``tasks <= 0``: one per shard).

    One generation task pays one engine start; on a CPU box one group is fastest, on a GPU cluster use
    one group per GPU worker (``conf/airflow.yaml`` ``generate_tasks``).
    """
    shards = sorted(int(s) for s in shards)
    n = len(shards) if tasks <= 0 else max(1, min(tasks, len(shards)))
    return [g for g in (shards[i::n] for i in range(n)) if g]


def run_step(name: str, dt: str, target: Target, shards: list[int] | None = None, *,
             timeout: float | None = None, env: dict[str, str] | None = None) -> float:
    """Run one step for one date (and shard group); returns its wall time in seconds.

    ``env``: extra environment of the step's process (the DAG passes ``QP_REDIS_URL`` from its connection).
    """
    s = step(name)
    label = f"{name}{shards}" if shards is not None else name
    t0 = time.monotonic()
    run_command(command(s, dt, target, shards), env=command_env(s, env), label=label, timeout=timeout)
    return time.monotonic() - t0


@dataclass
class StepTiming:
    name: str
    seconds: float
    shards: list[int] | None = None


@dataclass
class DayReport:
    dt: str
    target: Target
    timings: list[StepTiming] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.timings)


def iter_day(dt: str, target: Target, *, steps: Iterable[str] | None = None,
             tasks: int = 1) -> Iterator[tuple[str, list[int] | None]]:
    """The (step, shard group) units of one date in order; shard groups are listed after ``prompts`` ran.

    Serially, one group holding every shard is best (one engine start); the DAG maps over ``tasks`` groups.
    """
    wanted = set(steps) if steps else None
    for s in STEPS:
        if wanted is not None and s.name not in wanted:
            continue
        if s.per_shard:
            for group in shard_groups(prompt_shards(dt), tasks):
                yield s.name, group
        else:
            yield s.name, None


def run_day(dt: str, target: Target | None = None, *, steps: Iterable[str] | None = None,
            on_step: Callable[[str, "list[int] | None", str, float], None] | None = None,
            timeout: float | None = None) -> DayReport:
    """Run the daily pipeline for one date serially, in the DAG's order (``qp run day``, ``qp backfill``).

    ``on_step(name, shards, status, seconds)`` is called with status ``start``/``done`` for progress displays.
    """
    check_date(dt)
    if not log_partition_ready(dt):
        raise FileNotFoundError(f"no query-log partition for {dt}: {paths.partition(QUERY_LOG, dt)}")
    target = target or resolve_target()
    report = DayReport(dt, target)
    for name, shards in iter_day(dt, target, steps=steps):
        if on_step:
            on_step(name, shards, "start", 0.0)
        seconds = run_step(name, dt, target, shards, timeout=timeout)
        report.timings.append(StepTiming(name, seconds, shards))
        if on_step:
            on_step(name, shards, "done", seconds)
    return report
