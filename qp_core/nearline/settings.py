"""``conf/sampling.yaml``: what operations tune in the sample / context / prompts jobs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from qp_core.config import load_settings


class SamplingSettings(BaseModel):
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
    # prompts
    rules_mode: Literal["compact", "full"] = "compact"
    shard_size: int = Field(256, ge=1)


def load_sampling_settings(**overrides) -> SamplingSettings:
    return load_settings("sampling", SamplingSettings, **overrides)
