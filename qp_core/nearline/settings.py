"""Settings of the nearline steps: ``conf/sampling.yaml`` (sample / context / prompts Spark jobs) and
``conf/generation.yaml`` (the engine of the generate step, the quality gate of the validate step).

Why one module: generate and validate both read ``conf/generation.yaml``; with its model here neither
step imports the other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from qp_core.config import Settings, load_settings
from qp_core.engines.base import EngineSettings


class SamplingSettings(Settings):
    # sample
    max_query_chars: int = Field(64, ge=1)
    refresh_days: int = Field(14, ge=1)
    daily_budget: int = Field(20000, ge=1)
    # context
    history_k: int = Field(3, ge=0)
    history_lookback_days: int = Field(7, ge=1)
    notes_top_m: int = Field(3, ge=0)
    bm25_k1: float = Field(1.2, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    bm25_max_df_ratio: float = Field(0.25, gt=0, le=1)
    #: the df-ratio cut applies only to pools at least this large (in a tiny pool every term is "common")
    bm25_df_cut_min_docs: int = Field(100, ge=1)
    bm25_min_score: float = 0.0
    #: index every CJK character as a unigram as well as bigrams (slower, see ``nearline.text.tokenize``)
    bm25_cjk_unigrams: bool = False
    #: score in numpy against a broadcast index of the pool (``nearline.bm25``) when it has at most this
    #: many (note, term) postings; a larger pool is joined by term in Spark SQL
    bm25_broadcast_max_postings: int = Field(2_000_000, ge=0)
    # prompts
    rules_mode: Literal["compact", "full"] = "compact"
    shard_size: int = Field(256, ge=1)


def load_sampling_settings(**overrides) -> SamplingSettings:
    return load_settings("sampling", SamplingSettings, **overrides)


class ValidationSettings(Settings):
    """``conf/generation.yaml`` → ``validation``."""

    min_valid_rate: float = Field(0.8, ge=0, le=1)  # share of rows whose model output validated
    min_rows_for_gate: int = Field(1, ge=0)  # below this many rows the gate is not applied (reported only)
    require_all_shards: bool = True  # every prompts shard must have its generations file
    error_examples: int = Field(5, ge=0)  # rows quoted in the report per error kind


class GenerationSettings(Settings):
    """``conf/generation.yaml``: the engine, and the validation/quality gate of the next step."""

    engine: EngineSettings = Field(default_factory=EngineSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    # progress granularity: the bar and the log advance every chunk_rows finished rows
    chunk_rows: int = Field(256, ge=1)
    # rows handed to the engine per call, in whole shards (0 = the engine's choice: vLLM 4 x max_num_seqs, hf one
    # shard). vLLM keeps its batch full within a call and drains only at its end, so a call spans several
    # shards; each shard is still written (and resumed) on its own, and a kill loses at most one call's work.
    feed_rows: int = Field(0, ge=0)


def load_generation_settings(**overrides: Any) -> GenerationSettings:
    return load_settings("generation", GenerationSettings, **overrides)
