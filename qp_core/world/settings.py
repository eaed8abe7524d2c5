"""Settings of the world generator (``conf/world.yaml``), validated; CLI flags override them."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from qp_core.config import Settings, load_settings
from qp_core.world.drift import DriftSettings


class WorldSettings(Settings):
    seed: int = 20261101
    days: int = Field(7, ge=1, le=366)
    rows_per_day: int = Field(20000, ge=10)
    start_date: str = "2026-11-01"
    users: int = Field(5000, ge=1)
    max_session_len: int = Field(5, ge=1, le=20)
    refine_prob: float = Field(0.45, ge=0, le=0.95)
    ambiguous_share: float = Field(0.04, ge=0, le=1)
    head_size: int = Field(3000, ge=10)
    head_share: float = Field(0.55, ge=0, le=1)
    zipf_s: float = Field(1.05, gt=0)
    malformed_rate: float = Field(0.01, ge=0, le=0.5)
    notes: int = Field(3000, ge=50)
    history_k: int = Field(5, ge=0)
    notes_m: int = Field(3, ge=0)
    annotations_total: int = Field(4000, ge=0)
    ambiguous_annotation_share: float = Field(0.12, ge=0, le=1)
    golden: int = Field(2500, ge=0)
    ambiguous_golden_share: float = Field(0.12, ge=0, le=1)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @field_validator("start_date")
    @classmethod
    def _iso_date(cls, v: str) -> str:
        dt.date.fromisoformat(v)
        return v

    def dates(self) -> list[str]:
        start = dt.date.fromisoformat(self.start_date)
        return [(start + dt.timedelta(days=i)).isoformat() for i in range(self.days)]


def load_world_settings(**overrides) -> WorldSettings:
    return load_settings("world", WorldSettings, **overrides)
