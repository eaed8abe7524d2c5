"""The unified QP output: one JSON object with every sub-task's signal (DESIGN §3).

Field order is the task order NER -> Seg -> TW -> Taxonomy -> Intent, so that a left-to-right
decoder conditions later sub-tasks on earlier ones. Three things live here:

* ``QPResult`` — the pydantic model (types only);
* ``validation_errors`` / ``validate_result`` — the cross-field rules tied to the query
  (segments tile the query, one weight per segment, entities are left-to-right substrings,
  labels come from ``conf/``), each failure a precise message;
* ``json_schema`` — a flat JSON schema (no ``$ref``) for vLLM's constrained decoding.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qp_core.config import conf_path
from qp_core.normalize import compact

SCHEMA_VERSION = 1
FIELDS = ("entities", "segments", "weights", "category", "intent_desc")
MAX_WEIGHT = 3
MAX_CATEGORIES = 3
MAX_INTENT_CHARS = 200


@lru_cache(maxsize=1)
def entity_types() -> tuple[str, ...]:
    """Entity type names of the ontology in ``conf/entity_types.yaml``."""
    with open(conf_path("entity_types.yaml"), encoding="utf-8") as fh:
        return tuple(yaml.safe_load(fh)["types"])


@lru_cache(maxsize=1)
def entity_type_descriptions() -> dict[str, str]:
    with open(conf_path("entity_types.yaml"), encoding="utf-8") as fh:
        return dict(yaml.safe_load(fh)["types"])


@lru_cache(maxsize=1)
def taxonomy_labels() -> tuple[str, ...]:
    """Category labels of ``conf/taxonomy.yaml``, in file order."""
    with open(conf_path("taxonomy.yaml"), encoding="utf-8") as fh:
        return tuple(yaml.safe_load(fh)["labels"])


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    type: str


class QPResult(BaseModel):
    """Types of the unified output. Cross-field rules are in ``validation_errors``."""

    model_config = ConfigDict(extra="forbid")
    entities: list[Entity]
    segments: list[str]
    weights: list[int]
    category: list[str]
    intent_desc: str = Field(max_length=MAX_INTENT_CHARS)


class SchemaError(ValueError):
    """The output breaks the contract; ``errors`` lists every rule it breaks."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def entity_spans(entities: list[dict[str, Any]] | list[Entity], query: str) -> list[tuple[int, int, str] | None]:
    """(start, end, type) of each entity over ``compact(query)``; None where it cannot be placed.

    An entity's span is the first occurrence of its (whitespace-free, normalised) text at or after the end
    of the previous placed entity: entities are listed left to right and do not overlap.
    """
    q = compact(query)
    spans: list[tuple[int, int, str] | None] = []
    pos = 0
    for ent in entities:
        text, etype = (ent.text, ent.type) if isinstance(ent, Entity) else (ent.get("text"), ent.get("type"))
        t = compact(text) if isinstance(text, str) else ""
        idx = q.find(t, pos) if t else -1
        if idx < 0:
            spans.append(None)
            continue
        spans.append((idx, idx + len(t), str(etype)))
        pos = idx + len(t)
    return spans


def segment_spans(segments: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each segment: cumulative lengths of the whitespace-free normalised segments."""
    spans, pos = [], 0
    for seg in segments:
        n = len(compact(seg)) if isinstance(seg, str) else 0
        spans.append((pos, pos + n))
        pos += n
    return spans


def validation_errors(data: Any, query: str) -> list[str]:
    """Every rule of DESIGN §3 that ``data`` breaks for ``query``; an empty list means valid."""
    if isinstance(data, QPResult):
        data = data.model_dump()
    try:
        res = QPResult.model_validate(data)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        ]
    errors: list[str] = []
    q = compact(query)
    if not q:
        errors.append("query: empty after normalisation")
    joined = "".join(compact(s) for s in res.segments)
    if any(not compact(s) for s in res.segments):
        errors.append("segments: empty segment")
    if joined != q:
        errors.append(f"segments: concatenation {joined[:60]!r} != normalised query {q[:60]!r}")
    if len(res.weights) != len(res.segments):
        errors.append(f"weights: {len(res.weights)} weights for {len(res.segments)} segments")
    for i, w in enumerate(res.weights):
        if not 0 <= w <= MAX_WEIGHT:
            errors.append(f"weights[{i}]: {w} outside 0..{MAX_WEIGHT}")
    types = set(entity_types())
    for i, (ent, span) in enumerate(zip(res.entities, entity_spans(res.entities, query))):
        if ent.type not in types:
            errors.append(f"entities[{i}].type: {ent.type!r} not in ontology {sorted(types)}")
        if not compact(ent.text):
            errors.append(f"entities[{i}].text: empty")
        elif span is None:
            errors.append(f"entities[{i}].text: {ent.text!r} is not a substring of the query after the previous entity")
    labels = set(taxonomy_labels())
    if not res.category:
        errors.append("category: empty, at least one label is required")
    if len(res.category) > MAX_CATEGORIES:
        errors.append(f"category: {len(res.category)} labels, at most {MAX_CATEGORIES}")
    for i, label in enumerate(res.category):
        if label not in labels:
            errors.append(f"category[{i}]: {label!r} not in taxonomy")
    if len(set(res.category)) != len(res.category):
        errors.append("category: duplicate labels")
    if not res.intent_desc.strip():
        errors.append("intent_desc: empty")
    return errors


def validate_result(data: Any, query: str) -> QPResult:
    """The validated model, or ``SchemaError`` listing every broken rule."""
    errors = validation_errors(data, query)
    if errors:
        raise SchemaError(errors)
    return QPResult.model_validate(data)


def to_dict(res: QPResult | dict[str, Any]) -> dict[str, Any]:
    """Plain dict in canonical field order."""
    d = res.model_dump() if isinstance(res, QPResult) else res
    return {k: d[k] for k in FIELDS}


def dump_unified(res: QPResult | dict[str, Any]) -> str:
    """Canonical compact JSON (field order = task order, UTF-8 text): the training target and the KV payload."""
    return json.dumps(to_dict(res), ensure_ascii=False, separators=(",", ":"))


def empty_result() -> dict[str, Any]:
    """What an unparseable prediction counts as in the metrics."""
    return {"entities": [], "segments": [], "weights": [], "category": [], "intent_desc": ""}


def json_schema(max_items: int = 32) -> dict[str, Any]:
    """Flat JSON schema of the unified output for constrained decoding (no $defs / $ref).

    Bounds keep generation finite; ``propertyOrdering`` isn't standard, but backends honour
    ``required`` order, which is the task order.
    """
    return {
        "type": "object",
        "properties": {
            "entities": {
                "type": "array",
                "maxItems": max_items,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 1, "maxLength": 64},
                        "type": {"type": "string", "enum": list(entity_types())},
                    },
                    "required": ["text", "type"],
                    "additionalProperties": False,
                },
            },
            "segments": {
                "type": "array",
                "maxItems": max_items,
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            "weights": {
                "type": "array",
                "maxItems": max_items,
                "items": {"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT},
            },
            "category": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_CATEGORIES,
                "items": {"type": "string", "enum": list(taxonomy_labels())},
            },
            "intent_desc": {"type": "string", "minLength": 1, "maxLength": MAX_INTENT_CHARS},
        },
        "required": list(FIELDS),
        "additionalProperties": False,
    }
