"""The DAGs' parse-time settings (``conf/airflow.yaml``): schedules, retries, pools/queues, the local API port.

Why apart from the local Airflow harness (:mod:`qp_core.ops.airflow_local`): both DAG files read these at
parse time, so this module must stay cheap (pydantic + YAML) and import nothing that launches processes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field

from qp_core.config import Settings, load_settings


class AirflowSettings(Settings):
    """``conf/airflow.yaml``: schedules, retries, pools/queues of both DAGs and the local API port."""

    nearline_cron: str = "0 0 * * *"
    start_date: str = "2026-01-01"
    max_active_runs: int = Field(1, ge=1)
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(60, gt=0)
    retry_exponential_backoff: float = Field(2.0, ge=0)
    max_retry_delay_s: float = Field(1800, gt=0)
    sensor_poke_interval_s: float = Field(300, gt=0)
    sensor_timeout_s: float = Field(43200, gt=0)
    generate_pool: str = "default_pool"
    generate_pool_slots: int = Field(1, ge=1)
    generate_queue: str = "default"
    generate_tasks: int = Field(1, ge=0)
    generate_max_active_tis: int = Field(4, ge=1)
    step_timeout_s: float = Field(21600, gt=0)
    training_cron: str = "0 3 * * 0"
    training_on_annotations: bool = True
    training_profile: str = "tiny"
    training_pool: str = "default_pool"
    training_queue: str = "default"
    api_host: str = "localhost"
    api_port: int = Field(8793, ge=1, le=65535)


def settings() -> AirflowSettings:
    return load_settings("airflow", AirflowSettings)


def default_args(s: AirflowSettings | None = None, **extra: Any) -> dict[str, Any]:
    """The ``default_args`` both DAGs share (owner, retries and their back-off), plus each DAG's own ``extra``."""
    s = s or settings()
    return {
        "owner": "qp",
        "retries": s.retries,
        "retry_delay": timedelta(seconds=s.retry_delay_s),
        "retry_exponential_backoff": s.retry_exponential_backoff,
        "max_retry_delay": timedelta(seconds=s.max_retry_delay_s),
        **extra,
    }
