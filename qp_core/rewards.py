"""GRPO rewards (paper §4.3.3, eq. 10): R = Σ_k w_k r_k, with r_k the evaluation metric of sub-task k.

The paper defines each r_k *as* the evaluation metric, so that optimisation and evaluation cannot drift
apart. Here that is literal: every reward parses the completion with ``qp_core.parse.parse_output``
(an unusable output counts as an empty prediction, exactly as in ``metrics.evaluate``) and scores it with
``qp_core.metrics.sample_scores``, the per-sample form of the corpus metrics. For one sample,
``ner_reward == evaluate([pred], [ref])["ner_f1"] / 100``, and likewise for seg, tw, taxonomy and
intent (sentence chrF / 100).

TRL 1.16 calls each function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``, where
``columns`` are the other dataset columns, one value per completion. The rewards read:

* ``label`` (or ``reference``): the reference unified output, canonical JSON string or dict;
* ``query``: the query text (spans are measured on it).

Completions are plain strings, or for conversational datasets a list of messages
(``[{"role": "assistant", "content": ...}]``). A row without a reference gets ``None``, which TRL
excludes from that reward.

``format_reward`` is 1.0 for an output that passes the parser (repairs allowed: they are all
meaning-preserving), ``schema_fail_credit`` (conf/rewards.yaml, default 0.2) for a single well-formed
JSON object that breaks the contract — a small push towards parseable output when little else is —
and 0.0 otherwise. Weights w_k and that credit live in ``conf/rewards.yaml``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, field_validator

from qp_core.config import Settings, load_settings
from qp_core.metrics import sample_scores
from qp_core.parse import parse_output

logger = logging.getLogger(__name__)

REWARD_ORDER = ("format", "ner", "seg", "tw", "taxonomy", "intent")
_DEFAULT_WEIGHTS = {"format": 0.5, "ner": 1.0, "seg": 1.0, "tw": 1.0, "taxonomy": 1.0, "intent": 0.5}


class RewardSettings(Settings):
    """``conf/rewards.yaml``: task weights w_k (business importance) and the format reward's partial credit."""

    weights: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    schema_fail_credit: float = Field(0.2, ge=0.0, le=1.0)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = set(weights) - set(REWARD_ORDER)
        if unknown:
            raise ValueError(f"unknown reward names {sorted(unknown)}; known: {list(REWARD_ORDER)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError("reward weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one reward weight must be > 0")
        return weights


def load_reward_settings(**overrides: Any) -> RewardSettings:
    return load_settings("rewards", RewardSettings, **overrides)


@functools.lru_cache(maxsize=1)
def _default_settings() -> RewardSettings:
    return load_reward_settings()


# ---------------------------------------------------------------- shared scoring (cached per batch)


def completion_text(completion: Any) -> str | None:
    """The generated text of one TRL completion: a string, or the assistant content of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        parts = []
        for msg in completion:
            if not isinstance(msg, dict) or msg.get("role", "assistant") != "assistant":
                continue
            content = msg.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):  # multimodal-style [{"type": "text", "text": ...}]
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "".join(parts)
    return None


def _reference_json(reference: Any) -> str | None:
    if reference is None:
        return None
    if isinstance(reference, str):
        return reference
    if hasattr(reference, "model_dump"):
        reference = reference.model_dump()
    return json.dumps(reference, ensure_ascii=False, sort_keys=True)


@functools.lru_cache(maxsize=8192)
def _scores(text: str | None, reference_json: str, query: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """(parse stage, per-task scores); cached so the six reward functions parse and score each completion once."""
    ref = json.loads(reference_json)
    if not isinstance(ref, dict):
        raise ValueError(f"reference must be a JSON object, got {type(ref).__name__}")
    parsed = parse_output(text, query)
    scores = sample_scores(parsed.result, ref, query)
    return parsed.stage, tuple(scores.items())


@functools.lru_cache(maxsize=8192)
def _stage(text: str | None, query: str) -> str:
    return parse_output(text, query).stage


def _query(reference_json: str, query: Any) -> str:
    if isinstance(query, str):
        return query
    ref = json.loads(reference_json)
    if isinstance(ref, dict) and isinstance(ref.get("query"), str):
        return ref["query"]
    raise ValueError("no query: pass a `query` column or include `query` in the reference")


def per_task_rewards(
    completion: Any, reference: Any, query: str | None = None, *, schema_fail_credit: float | None = None
) -> dict[str, float]:
    """Rewards of one completion for every sub-task of ``metrics.TASKS`` plus ``format`` (0–1 each).

    ``reference``: unified dict or canonical JSON string; ``query`` defaults to ``reference["query"]``.
    Used by the GRPO data filter and, through the same cached scoring, by the TRL reward functions.
    """
    ref_json = _reference_json(reference)
    if ref_json is None:
        raise ValueError("per_task_rewards needs a reference")
    stage, scores = _scores(completion_text(completion), ref_json, _query(ref_json, query))
    credit = _default_settings().schema_fail_credit if schema_fail_credit is None else schema_fail_credit
    out = dict(scores)
    out["format"] = _format_score(stage, credit)
    return out


def total_reward(
    completion: Any, reference: Any, query: str | None = None, settings: RewardSettings | None = None
) -> float:
    """R = Σ_k w_k r_k for one completion: what GRPOTrainer sums from ``reward_funcs_and_weights``."""
    settings = settings or _default_settings()
    r = per_task_rewards(completion, reference, query, schema_fail_credit=settings.schema_fail_credit)
    return sum(w * r[name] for name, w in settings.weights.items())


def _format_score(stage: str, schema_fail_credit: float) -> float:
    if stage == "ok":
        return 1.0
    return schema_fail_credit if stage == "schema" else 0.0


# ---------------------------------------------------------------- TRL reward functions


def _column(kwargs: Mapping[str, Any], n: int, *names: str) -> list[Any]:
    for name in names:
        values = kwargs.get(name)
        if values is not None:
            values = list(values)
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
            return values
    return [None] * n


def _task_rewards(task: str, completions: list[Any], kwargs: Mapping[str, Any]) -> list[float | None]:
    n = len(completions)
    refs = _column(kwargs, n, "label", "reference")
    queries = _column(kwargs, n, "query")
    out: list[float | None] = []
    for completion, ref, query in zip(completions, refs, queries):
        ref_json = _reference_json(ref)
        if ref_json is None:
            out.append(None)
            continue
        _, scores = _scores(completion_text(completion), ref_json, _query(ref_json, query))
        out.append(dict(scores)[task])
    return out


def ner_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Strict NER F1 (span + type) of each completion against its reference, 0–1."""
    return _task_rewards("ner", completions, kwargs)


def seg_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Word-segmentation F1 on (start, end) units, 0–1."""
    return _task_rewards("seg", completions, kwargs)


def tw_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Term-weighting joint F1 on (start, end, weight) units, 0–1."""
    return _task_rewards("tw", completions, kwargs)


def taxonomy_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """½ (top-1 correct + label-set F1), 0–1."""
    return _task_rewards("taxonomy", completions, kwargs)


def intent_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Sentence chrF of the intent description / 100."""
    return _task_rewards("intent", completions, kwargs)


def format_reward(completions: list[Any], schema_fail_credit: float | None = None, **kwargs: Any) -> list[float]:
    """1.0 valid output, ``schema_fail_credit`` for a JSON object that breaks the contract, else 0.0.

    Validity depends on the query (segments must tile it), so the ``query`` column is read too;
    without it, only "is there one JSON object" can be judged and a JSON object scores the partial credit.
    """
    credit = _default_settings().schema_fail_credit if schema_fail_credit is None else schema_fail_credit
    n = len(completions)
    queries = _column(kwargs, n, "query")
    refs = _column(kwargs, n, "label", "reference")
    out = []
    for completion, query, ref in zip(completions, queries, refs):
        if not isinstance(query, str) and ref is not None:
            try:
                query = _query(_reference_json(ref), None)
            except ValueError:
                query = None
        stage = _stage(completion_text(completion), query if isinstance(query, str) else "")
        out.append(_format_score(stage, credit))
    return out


_TASK_FUNCS: dict[str, Callable[..., list]] = {
    "ner": ner_reward,
    "seg": seg_reward,
    "tw": tw_reward,
    "taxonomy": taxonomy_reward,
    "intent": intent_reward,
}


def reward_funcs(settings: RewardSettings | None = None) -> dict[str, Callable[..., list]]:
    """Name -> TRL reward function, in ``REWARD_ORDER`` (picklable: module functions / functools.partial)."""
    settings = settings or _default_settings()
    fmt = functools.partial(format_reward, schema_fail_credit=settings.schema_fail_credit)
    fmt.__name__ = "format_reward"  # callers log ``f.__name__``; a bare partial has none (kept when pickled)
    table: dict[str, Callable[..., list]] = {"format": fmt}
    table.update(_TASK_FUNCS)
    return table


def reward_funcs_and_weights(
    settings: RewardSettings | None = None, *, weights: Mapping[str, float] | None = None
) -> tuple[list[Callable[..., list]], list[float]]:
    """(reward_funcs, reward_weights) for ``GRPOTrainer(reward_funcs=...)`` / ``GRPOConfig(reward_weights=...)``.

    Weights come from ``settings`` (default: ``conf/rewards.yaml``) unless ``weights`` is given; rewards
    with weight 0 are left out (they would cost a parse and contribute nothing).
    """
    settings = settings or _default_settings()
    if weights is not None:
        settings = RewardSettings(weights=dict(weights), schema_fail_credit=settings.schema_fail_credit)
    table = reward_funcs(settings)
    funcs, ws = [], []
    for name in REWARD_ORDER:
        w = float(settings.weights.get(name, 0.0))
        if w > 0:
            funcs.append(table[name])
            ws.append(w)
    return funcs, ws
