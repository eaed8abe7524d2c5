"""Settings of the legacy baseline (``conf/legacy.yaml``): which annotation days its snapshot was fitted on."""

from __future__ import annotations

from pydantic import Field

from qp_core.config import Settings, load_settings


class LegacySettings(Settings):
    # fit on the first N annotation days (dt partitions, oldest first); None/0 = every partition
    snapshot_days: int | None = Field(2, ge=0)


def load_legacy_settings(**overrides) -> LegacySettings:
    return load_settings("legacy", LegacySettings, **overrides)
