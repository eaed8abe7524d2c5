"""Settings of the legacy baseline (``conf/legacy.yaml``): which annotation days its snapshot was fitted on."""

from __future__ import annotations

from pydantic import BaseModel, Field

from qp_core.config import load_settings


class LegacySettings(BaseModel):
    # fit on the first N annotation days (dt partitions, oldest first); None/0 = every partition
    snapshot_days: int | None = Field(2, ge=0)


def load_legacy_settings(**overrides) -> LegacySettings:
    return load_settings("legacy", LegacySettings, **overrides)
