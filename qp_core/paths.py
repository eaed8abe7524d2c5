"""Where things live on disk. One place, so jobs, DAGs, CLI and tests agree.

Everything hangs off ``QP_HOME`` (default ``./var`` relative to the working directory):
the lake (Parquet datasets partitioned by ``dt=YYYY-MM-DD``), the model registry and
run-time state such as the demo's Redis server. ``QP_LAKE_ROOT`` overrides the lake alone.
Nothing is created here; callers mkdir what they write.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def qp_home() -> Path:
    return Path(os.environ.get("QP_HOME", "var")).resolve()


def lake_root() -> Path:
    env = os.environ.get("QP_LAKE_ROOT")
    return Path(env).resolve() if env else qp_home() / "lake"


def dataset(name: str) -> Path:
    """Path of a lake dataset, e.g. ``dataset("raw/query_log")``."""
    return lake_root() / name


def partition(name: str, dt: str) -> Path:
    """Path of one date partition of a lake dataset (``dt`` stays a ``YYYY-MM-DD`` string)."""
    return dataset(name) / f"dt={dt}"


def redis_url_file() -> Path:
    """``$QP_HOME/run/redis.url``: where the local server's URL is recorded (written by
    ``qp_core.ops.redis_server``, read by ``qp_core.kv.settings`` without importing the launcher)."""
    return qp_home() / "run" / "redis.url"


def registry_root() -> Path:
    return Path(os.environ.get("QP_REGISTRY", str(qp_home() / "registry"))).resolve()


def conf_dir() -> Path:
    return Path(os.environ.get("QP_CONF_DIR", str(REPO_ROOT / "conf"))).resolve()


def newest_partition(name: str) -> str | None:
    """The newest ``dt`` of a lake dataset (``YYYY-MM-DD`` strings sort by date), or None when it has none."""
    root = dataset(name)
    dts = sorted(p.name[3:] for p in root.glob("dt=*") if p.is_dir()) if root.is_dir() else []
    return dts[-1] if dts else None
