"""Which engine, with which settings: the profile's limits on top of ``conf/generation.yaml``, then the backend.

Why apart from :mod:`qp_core.engines.base`: the backends import the base interface; the factory imports the
backends. Keeping the factory out of ``base`` keeps the arrows one way (factory -> backends -> base).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qp_core.config import ConfigError
from qp_core.engines.base import EngineSettings, GenerationEngine
from qp_core.profiles import load_profile

logger = logging.getLogger(__name__)


def model_profile_name(model_dir: str | Path) -> str | None:
    """The profile a model directory was made with: ``qp_model.json`` (created) or ``meta.json`` (registry)."""
    for name in ("meta.json", "qp_model.json"):
        path = Path(model_dir) / name
        if path.exists():
            try:
                prof = json.loads(path.read_text(encoding="utf-8")).get("profile")
            except (OSError, ValueError):
                continue
            if prof:
                return str(prof)
    return None


def engine_settings_for(model_dir: str | Path, base: EngineSettings | None = None, profile: str | None = None) -> EngineSettings:
    """``base`` (conf/generation.yaml) with the model profile's dtype, lengths and ``engine`` overrides on top."""
    base = base or EngineSettings()
    name = profile or model_profile_name(model_dir)
    if not name:
        return base
    try:
        prof = load_profile(name)
    except ConfigError:
        logger.warning("model %s names profile %r which has no conf file; using engine defaults", model_dir, name)
        return base
    data = base.model_dump()
    data.update(
        dtype=prof.dtype if base.dtype == "auto" else base.dtype,
        max_model_len=prof.max_model_len,
        max_prompt_tokens=prof.max_prompt_tokens,
        max_new_tokens=prof.max_new_tokens,
    )
    data.update(prof.engine)
    return EngineSettings.model_validate(data)


def make_engine(model_dir: str | Path, settings: EngineSettings | None = None) -> GenerationEngine:
    """Start the engine ``settings.backend`` names on ``model_dir``. vLLM needs a ``__main__`` guard in scripts."""
    settings = settings or EngineSettings()
    if settings.backend == "vllm":
        from qp_core.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, settings)
    if settings.backend == "hf":
        from qp_core.engines.hf_engine import HFEngine

        return HFEngine(model_dir, settings)
    raise ValueError(f"unknown engine backend {settings.backend!r}")
