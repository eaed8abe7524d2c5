"""THE check of a publishable row, shared by the validate step and the publisher (one rule set, one home).

A row of ``curated/qp_results`` may reach the KV store only if :func:`check_row` accepts it. The
validate step (``qp_core.validate``) runs it on every row it writes, and records in the partition's
``_quality.json`` the check's version and a digest of each file it wrote; the publisher re-runs it
only when it cannot prove the partition is untouched output of this same check
(:func:`partition_prevalidated`), so a day is validated once, yet a hand-edited or older partition
is still checked row by row.

Stricter than ``schema.validation_errors`` alone, because readers parse these bytes in a request
path: JSON types exactly as the spec says (a weight is an int 0-3, not a bool, float or string),
no control, format (bidi, zero-width) or surrogate characters in any string, size caps, and no
duplicate JSON keys (``json.loads`` would silently keep the last one).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from qp_core.normalize import normalize_query, query_key
from qp_core.schema import QPResult, dump_unified, validation_errors

ROW_CHECK_VERSION = 2  # bump whenever check_row accepts less (or more): old partitions are then re-checked
SOURCES = ("model", "fallback")
MAX_QUERY_CHARS = 256
MAX_RESULT_BYTES = 4096
MAX_LIST_ITEMS = 64
# C0/C1 controls, soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width and bidi marks,
# embeddings/overrides/isolates, invisible operators, BOM, interlinear annotations, lone surrogates
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                        "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]")


class CheckedRow(NamedTuple):
    query_key: str
    query_norm: str
    result_json: str  # canonical (schema.dump_unified): what the validate step stores
    src: str


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey(sorted({k for k, _ in pairs if sum(1 for k2, _ in pairs if k2 == k) > 1}))
    return out


def parse_result_json(raw: str) -> dict[str, Any] | str:
    """The JSON object in ``raw``, or the reason it is refused (not JSON, duplicate keys, not an object)."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except _DuplicateKey:
        return "result_json duplicate keys"
    except ValueError:
        return "result_json not JSON"
    return value if isinstance(value, dict) else "result_json invalid"


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def check_result(result: dict[str, Any], query_norm: str) -> str | None:
    """None if ``result`` is a valid, strictly typed answer for ``query_norm``; else the reason."""
    if any(_BAD_CHARS.search(s) for s in _strings(result)):
        return "control characters"
    try:
        QPResult.model_validate(result, strict=True)  # int weights (no bool/float/str), str texts
    except ValidationError:
        return "result_json invalid"
    if any(len(result[k]) > MAX_LIST_ITEMS for k in ("entities", "segments", "weights", "category")):
        return "too large"
    if validation_errors(result, query_norm):
        return "result_json invalid"
    return None


def check_row(row: Mapping[str, Any]) -> CheckedRow | str:
    """A publishable row's (query_key, query_norm, canonical result_json, src), else why it is refused."""
    qnorm = row.get("query_norm")
    if not isinstance(qnorm, str) or not qnorm:
        return "missing query_norm"
    if _BAD_CHARS.search(qnorm):
        return "control characters"
    if len(qnorm) > MAX_QUERY_CHARS:
        return "too large"
    if normalize_query(qnorm) != qnorm:
        return "query_norm not normalised"
    qkey = query_key(qnorm)
    if row.get("query_key") not in (None, "", qkey):
        return "query_key mismatch"
    src = row.get("src") or "model"
    if src not in SOURCES:
        return "bad src"
    raw = row.get("result_json")
    if not isinstance(raw, str) or not raw:
        return "missing result_json"
    if len(raw) > MAX_RESULT_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_RESULT_BYTES:
        return "too large"
    result = parse_result_json(raw)
    if isinstance(result, str):
        return result
    reason = check_result(result, qnorm)
    if reason:
        return reason
    return CheckedRow(qkey, qnorm, dump_unified(result), src)


# ---- proof that a partition is this check's untouched output -----------------------------------------
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def partition_stamp(part_dir: Path) -> dict[str, Any]:
    """What the validate step records in ``_quality.json``: the check version and each data file's sha256."""
    files = sorted(p for p in Path(part_dir).glob("*.parquet"))
    return {"version": ROW_CHECK_VERSION, "files": {p.name: file_digest(p) for p in files}}


def partition_prevalidated(part_dir: Path, quality: Mapping[str, Any] | None) -> bool:
    """True when ``quality['row_check']`` matches this check version and every data file, byte for byte."""
    stamp = (quality or {}).get("row_check")
    if not isinstance(stamp, dict) or stamp.get("version") != ROW_CHECK_VERSION:
        return False
    return stamp == partition_stamp(part_dir)
