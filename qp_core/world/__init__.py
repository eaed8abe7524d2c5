"""Synthetic SNS search world: the stand-in for production query logs, notes and human annotations.

``generate(out_root, seed, days, rows_per_day, start_date)`` writes the raw lake datasets of
docs/ARCHITECTURE.md. Ground truth follows conf/rules/ exactly (``qp_core.world.labels``).
Submodules are imported lazily so that importing the package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate", "WorldSettings", "load_world_settings"]


def __getattr__(name: str) -> Any:
    if name == "generate":
        from qp_core.world.build import generate

        return generate
    if name in ("WorldSettings", "load_world_settings"):
        from qp_core.world import settings

        return getattr(settings, name)
    raise AttributeError(name)
