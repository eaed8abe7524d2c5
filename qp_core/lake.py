"""The lake as code: dataset names, partition paths, date checks and the readers of the lake's own files.

Why one module: the table in ``docs/ARCHITECTURE.md`` ("Lake datasets") is a contract between the world
generator, the Spark jobs, generation, validation, publish, training and the DAGs. Naming each dataset
once here (instead of a string literal per caller) makes a rename one edit and a typo an ``AttributeError``.
Paths hang off :mod:`qp_core.paths` (``QP_HOME`` / ``QP_LAKE_ROOT``); nothing is created here.

Readers live here only for the lake's own small files: the prompts manifest and the quality report. Parquet
datasets are read by their stages (Spark or pyarrow), through the paths named here.
"""

from __future__ import annotations

import datetime as dt_mod
import json
import re
from pathlib import Path
from typing import Any

from qp_core import paths

# ---------------------------------------------------------------------------------------------------
# Dataset names (docs/ARCHITECTURE.md, "Lake datasets")

QUERY_LOG = "raw/query_log"
NOTES = "raw/notes"
ANNOTATIONS = "raw/annotations"
GOLDEN = "raw/golden"
QUERY_SAMPLE = "curated/query_sample"
QUARANTINE = "curated/quarantine"
QUERY_CONTEXT = "curated/query_context"
PROMPTS = "curated/prompts"
GENERATIONS = "curated/generations"
RESULTS = "curated/qp_results"
AUX = "training/aux"
KV_MANIFEST = "curated/kv_manifest"  # ns=<namespace>/: what each KV namespace holds (qp_core.kv.manifest)

MANIFEST_NAME = "_manifest.json"  # beside the shards of a prompts partition
QUALITY_FILE = "_quality.json"  # beside the rows of a results partition

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def dataset(name: str) -> Path:
    """Path of a lake dataset (``dataset(QUERY_LOG)``)."""
    return paths.dataset(name)


def partition(name: str, dt: str) -> Path:
    """Path of one date partition of a lake dataset (``dt`` stays a ``YYYY-MM-DD`` string)."""
    return paths.partition(name, dt)


def newest_partition(name: str) -> str | None:
    """The newest ``dt`` of a lake dataset, or None when it has none."""
    return paths.newest_partition(name)


# ---------------------------------------------------------------------------------------------------
# Dates, partitions, shards



def check_date(dt: str) -> str:
    """``dt`` itself when it is a real ``YYYY-MM-DD`` date, else ``ValueError`` (partition names are strings)."""
    if not isinstance(dt, str) or not DATE_RE.match(dt):
        raise ValueError(f"partition date must be YYYY-MM-DD, got {dt!r}")
    dt_mod.date.fromisoformat(dt)
    return dt


def partition_date(explicit: str | None, data_interval_start) -> str:
    """The run's partition date: an explicit ``dt`` (run conf) wins, else the data interval's start day."""
    if explicit:
        return check_date(str(explicit))
    return data_interval_start.strftime("%Y-%m-%d")


def date_range(start: str, end: str) -> list[str]:
    """Inclusive list of YYYY-MM-DD dates from ``start`` to ``end``."""
    d0, d1 = dt_mod.date.fromisoformat(check_date(start)), dt_mod.date.fromisoformat(check_date(end))
    if d1 < d0:
        raise ValueError(f"end {end} is before start {start}")
    return [(d0 + dt_mod.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def log_partition_ready(dt: str) -> bool:
    """True once ``raw/query_log/dt=D`` has a ``_SUCCESS`` marker or at least one Parquet file."""
    part = partition(QUERY_LOG, check_date(dt))
    if not part.is_dir():
        return False
    if (part / "_SUCCESS").exists():
        return True
    return any(part.rglob("*.parquet"))


def prompt_shard_dir(dt: str, shard: int) -> Path:
    """``curated/prompts/dt=D/shard=NNNNN``: one unit of generation work."""
    return partition(PROMPTS, dt) / f"shard={int(shard):05d}"


def read_prompts_manifest(dt: str) -> dict[str, Any] | None:
    """The ``_manifest.json`` the prompts step writes beside its shards (rows, shards and their row counts),
    or None when the partition has none."""
    path = partition(PROMPTS, dt) / MANIFEST_NAME
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def prompt_shards(dt: str, *, required: bool = False) -> list[int]:
    """The prompt shards of ``dt``, sorted: from ``_manifest.json`` when present, else the ``shard=`` folders.

    The one answer to "which shards does this date have" (DAG fan-out, ``qp run``, generation, validation).
    A date without a prompts partition has none, or raises ``FileNotFoundError`` when ``required``.
    """
    part = partition(PROMPTS, check_date(dt))
    manifest = read_prompts_manifest(dt)
    if manifest is not None:
        return sorted(int(s["shard"]) for s in manifest.get("shards", []))
    if not part.is_dir():
        if required:
            raise FileNotFoundError(f"no prompts partition {part}: run the prompts job for {dt} first")
        return []
    shards = []
    for child in part.iterdir():
        if child.is_dir() and child.name.startswith("shard="):
            try:
                shards.append(int(child.name.split("=", 1)[1]))
            except ValueError:
                continue
    return sorted(shards)


def generations_dir(dt: str, model_version: str) -> Path:
    """``curated/generations/dt=D/model=V``: one file per prompt shard."""
    return partition(GENERATIONS, dt) / f"model={model_version}"


def generation_shard(dt: str, model_version: str, shard: int) -> Path:
    """The generations file of one prompt shard (written atomically by the generate step)."""
    return generations_dir(dt, model_version) / f"shard={int(shard):05d}.parquet"


def quality_path(dt: str) -> Path:
    """``curated/qp_results/dt=D/_quality.json``: the validate step's quality report and gate verdict."""
    return partition(RESULTS, dt) / QUALITY_FILE


def read_quality(dt: str) -> dict[str, Any] | None:
    """The quality report of ``dt``'s results, or None when the partition has none."""
    path = quality_path(dt)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def kv_manifest_dir(namespace: str) -> Path:
    """``curated/kv_manifest/ns=<namespace>``: the lake mirror of what a KV namespace holds."""
    return dataset(KV_MANIFEST) / f"ns={namespace}"
