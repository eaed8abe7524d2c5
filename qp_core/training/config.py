"""Typed settings of the training chain: ``conf/training.yaml`` (``defaults`` deep-merged with one ``section``).

Why sections: the same chain runs at CI size, on the tiny CPU profile, on gemma3-270m and on GPU
profiles; only sizes, step budgets and the model profile change, so each is a small override block.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field

from qp_core.config import ConfigError, Settings, load_conf
from qp_core.registry import GateSettings


class _Model(Settings):
    """Base of the training settings sections (unknown keys rejected, like every settings model)."""


class AuxSettings(_Model):
    lookback_days: int = 30
    size: int = 10_000
    min_freq: int = 1


class SFTStageSettings(_Model):
    lambda_aux: float = 0.0
    recent_days: int = 14
    max_steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    learning_rate: float = 2e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    max_length: int = 768
    save_steps: int = 100
    logging_steps: int = 10


class FilterSettings(_Model):
    num_prompts: int = 128
    num_generations: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    batch_size: int = 32
    vary_threshold: float = 0.05
    consistency_eps: float = 0.02


class GRPOSettings(_Model):
    max_steps: int = 40
    num_generations: int = 4
    per_device_batch: int = 16
    learning_rate: float = 5e-5
    beta: float = 0.04
    temperature: float = 1.0
    max_completion_length: int = 160
    multi_objective_aggregation: str = "sum_then_normalize"
    scale_rewards: str = "group"
    loss_type: str = "dapo"
    logging_steps: int = 5
    save_steps: int = 20
    use_vllm: bool = False
    weights: dict[str, float] = Field(default_factory=dict)


class EvalSettings(_Model):
    limit: int = 0
    batch_size: int = 64
    max_new_tokens: int = 192
    stages: list[str] = Field(default_factory=lambda: ["stage1", "stage2", "grpo"])
    # models decode as the nearline engines do (conf/generation.yaml engine.query_grammar); this adds the
    # valid-JSON rate of a free decoding, which shows how much of the validity the grammar supplies
    free_valid_rate: bool = True


class TrainingSettings(_Model):
    section: str = "tiny"
    profile: str = "tiny"
    seed: int = 13
    context: bool = True
    tasks: list[str] = Field(default_factory=lambda: ["ner", "seg", "tw", "taxonomy", "intent"])
    threads: int = 2
    bf16: bool = True
    aux: AuxSettings = Field(default_factory=AuxSettings)
    sft1: SFTStageSettings = Field(default_factory=SFTStageSettings)
    sft2: SFTStageSettings = Field(default_factory=SFTStageSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    grpo: GRPOSettings = Field(default_factory=GRPOSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    gate: GateSettings = Field(default_factory=GateSettings)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_training_settings(section: str | None = None, overrides: dict[str, Any] | None = None) -> TrainingSettings:
    """Settings of ``section`` (default ``default_section``), with ``overrides`` (nested dict) on top."""
    raw = load_conf("training")
    sections = raw.get("sections") or {}
    name = section or raw.get("default_section") or "tiny"
    if name not in sections:
        raise ConfigError(f"conf/training.yaml: unknown section {name!r} (have: {', '.join(sections)})")
    merged = deep_merge(raw.get("defaults") or {}, sections[name] or {})
    merged = deep_merge(merged, overrides or {})
    merged["section"] = name
    merged["gate"] = raw.get("gate") or {}
    try:
        return TrainingSettings.model_validate(merged)
    except Exception as exc:
        raise ConfigError(f"invalid conf/training.yaml section {name!r}: {exc}") from exc


def section_for_profile(profile: str) -> str:
    """The section named like ``profile`` if there is one, else the default section."""
    raw = load_conf("training")
    return profile if profile in (raw.get("sections") or {}) else (raw.get("default_section") or "tiny")
