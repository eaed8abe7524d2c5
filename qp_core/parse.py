"""Turn a model's raw completion into a validated unified result, or a precise error. Never raises.

Generation output is untrusted text: it can be truncated, wrapped in chat-template residue or a
Markdown fence, followed by an end-of-turn marker, or simply garbage. Everything downstream (KV
publishing, metrics, GRPO rewards) wants one of two things: a dict that passed every rule of the
contract, or ``None`` with a reason. ``parse_output`` is that boundary.

Repairs are applied only where the intended object is unambiguous, and each is reported by name
(``ParseResult.repairs``) so that the quality report can count them:

* ``decode_bytes``     — input was UTF-8 ``bytes``;
* ``code_fence``       — exactly one object wrapped in a Markdown fence (```json ... ```);
* ``leading_text``     — other text before exactly one JSON object (e.g. ``<think></think>``, a preamble);
* ``trailing_text``    — other text after it (e.g. ``<|im_end|>``, a closing remark);
* ``trailing_comma``   — commas directly before ``}`` or ``]`` (outside strings) and nothing else wrong;
* ``strip_whitespace`` — leading/trailing whitespace around entity texts/types, segments, labels,
  intent description (spans are measured on whitespace-free text, so this never moves a span);
* ``duplicate_category`` — a taxonomy label repeated in the ranked ``category`` list: later copies are
  dropped (the first is its rank). The one rule the query grammar (``qp_core.grammar``) cannot express.

Things that are *not* repaired because the intent is ambiguous: two or more JSON objects,
a truncated object, duplicate keys, NaN/Infinity, wrong JSON types (``"3"`` or ``3.0`` or ``true`` as a
weight: the schema's lax check would coerce them, the parser is strict), control or bidi-override
characters inside strings, anything that fails ``qp_core.schema.validation_errors``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from qp_core.schema import FIELDS, QPResult, to_dict, validation_errors

logger = logging.getLogger(__name__)

# A unified output is a few hundred bytes; 64k characters leaves room for long intent text
# plus residue while keeping every step linear and cheap.
MAX_INPUT_CHARS = 65_536
# Bound on how many '{' positions the object search tries (each try is linear in the rest).
MAX_OBJECT_STARTS = 256
MAX_ERROR_CHARS = 1_000

REPAIRS = ("decode_bytes", "code_fence", "leading_text", "trailing_text", "trailing_comma", "strip_whitespace",
           "duplicate_category")

# C0/C1 controls, zero-width and bidi/format characters: never valid inside a published string.
_BAD_CHARS = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_FENCE_OPEN = re.compile(r"^```[A-Za-z0-9_-]*$")


@dataclass
class ParseResult:
    """Outcome of ``parse_output``.

    ``result``: the validated unified dict in canonical field order, or None.
    ``error``: why there is no result (None when there is one).
    ``repairs``: names of the repairs applied (see module docstring), in the order applied.
    ``stage``: how far parsing got — ``input`` (unusable input), ``json`` (no single JSON object),
    ``schema`` (a JSON object that breaks the contract) or ``ok``. Rewards use it for partial format credit.
    """

    result: dict[str, Any] | None
    error: str | None = None
    repairs: list[str] = field(default_factory=list)
    stage: str = "ok"

    @property
    def ok(self) -> bool:
        return self.result is not None


class _JSONProblem(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _JSONProblem(f"non-finite number {name} is not JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise _JSONProblem(f"number {text[:30]} overflows")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JSONProblem(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_float=_parse_float, strict=True
)


def _loads(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys, no raw control characters in strings."""
    obj, end = _DECODER.raw_decode(text)
    if text[end:].strip():
        raise _JSONProblem(f"extra data at char {end}")
    return obj


# JSON strings (complete), a lone quote (unterminated string), brackets, and a comma right before a closer.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|"|[{}\[\]]|,(?=\s*[}\]])', re.S)
# Token budget for the trailing-comma search over all start positions: keeps adversarial input linear.
_COMMA_TOKEN_BUDGET = 100_000


def _balanced_without_trailing_commas(text: str, start: int, budget: int) -> tuple[tuple[str, int] | None, int]:
    """From the '{' at ``start``: ((object text with commas before '}'/']' removed, end) | None, tokens used).

    String-aware; None if the brackets never balance (truncated output), a string never ends, the budget
    runs out, or no comma had to be dropped (then the plain parse already decided).
    """
    depth, used, last, dropped = 0, 0, start, False
    pieces: list[str] = []
    for m in _TOKENS.finditer(text, start):
        used += 1
        if used > budget:
            break
        tok = m.group()
        if tok == '"':
            break
        if tok[0] == '"':
            continue
        if tok == ",":
            pieces.append(text[last:m.start()])
            last, dropped = m.end(), True
        elif tok in "{[":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                pieces.append(text[last:m.end()])
                return (("".join(pieces), m.end()) if dropped else None), used
    return None, used


def _looks_unified(obj: Any) -> bool:
    """A dict with at least one unified field: excludes e.g. the entity objects inside a truncated output."""
    return isinstance(obj, dict) and any(k in obj for k in FIELDS)


def _find_objects(text: str, *, fix_commas: bool) -> list[tuple[int, int, Any]]:
    """Unified-looking JSON objects embedded in ``text``, not nested in one another: (start, end, value)."""
    found: list[tuple[int, int, Any]] = []
    pos, tries, budget = 0, 0, _COMMA_TOKEN_BUDGET
    while tries < MAX_OBJECT_STARTS and budget > 0:
        i = text.find("{", pos)
        if i < 0:
            break
        tries += 1
        pos = i + 1
        try:
            if fix_commas:
                fixed, used = _balanced_without_trailing_commas(text, i, budget)
                budget -= used
                if fixed is None:
                    continue
                obj, end = _loads(fixed[0]), fixed[1]
            else:
                obj, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError):
            continue
        if _looks_unified(obj):
            found.append((i, end, obj))
            pos = end
    return found


def _context_repairs(text: str, start: int, end: int) -> list[str]:
    lead, trail = text[:start].strip(), text[end:].strip()
    if lead and trail and _FENCE_OPEN.match(lead) and trail == "```":
        return ["code_fence"]
    return (["leading_text"] if lead else []) + (["trailing_text"] if trail else [])


def _extract_object(text: str) -> tuple[dict[str, Any] | None, list[str], str | None]:
    """(object, repairs, error): the one JSON object in ``text``."""
    stripped = text.strip()
    if not stripped:
        return None, [], "empty output"
    try:
        obj = _loads(stripped)
    except (ValueError, RecursionError) as exc:
        whole_error = f"invalid JSON: {_short(exc)}"
    else:
        if isinstance(obj, dict):
            return obj, [], None
        return None, [], f"top-level JSON is {type(obj).__name__}, expected an object"
    for fix_commas in (False, True):
        found = _find_objects(text, fix_commas=fix_commas)
        if len(found) > 1:
            return None, [], f"ambiguous: {len(found)} JSON objects in the output"
        if len(found) == 1:
            start, end, obj = found[0]
            repairs = _context_repairs(text, start, end) + (["trailing_comma"] if fix_commas else [])
            return obj, repairs, None
    return None, [], whole_error if "{" in text else "no JSON object in the output"


def _bad_string(data: dict[str, Any]) -> str | None:
    """First string value containing a control/format character, as an error message."""

    def check(value: Any, where: str) -> str | None:
        if isinstance(value, str):
            m = _BAD_CHARS.search(value)
            return f"{where}: control character U+{ord(m.group()):04X}" if m else None
        if isinstance(value, list):
            for i, item in enumerate(value):
                msg = check(item, f"{where}[{i}]")
                if msg:
                    return msg
        if isinstance(value, dict):
            for key, item in value.items():
                msg = check(item, f"{where}.{key}" if where else str(key))
                if msg:
                    return msg
        return None

    return check(data, "")


def _strip_whitespace(data: dict[str, Any]) -> bool:
    """Strip outer whitespace of the unified fields' strings in place; True if anything changed."""
    changed = False

    def strip(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str) and value != value.strip():
            changed = True
            return value.strip()
        return value

    for key in ("segments", "category"):
        if isinstance(data.get(key), list):
            data[key] = [strip(v) for v in data[key]]
    if isinstance(data.get("entities"), list):
        for ent in data["entities"]:
            if isinstance(ent, dict):
                for k in ("text", "type"):
                    if k in ent:
                        ent[k] = strip(ent[k])
    if "intent_desc" in data:
        data["intent_desc"] = strip(data["intent_desc"])
    return changed


def _drop_repeated_labels(data: dict[str, Any]) -> bool:
    """Keep the first occurrence of each (hashable) label in ``category``; True if anything was dropped."""
    labels = data.get("category")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return False
    unique = list(dict.fromkeys(labels))
    data["category"] = unique
    return len(unique) != len(labels)


def _short(exc: BaseException | str) -> str:
    msg = str(exc)
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[:MAX_ERROR_CHARS] + "…"


def _parse(text: Any, query: Any, max_chars: int) -> ParseResult:
    repairs: list[str] = []
    if text is None:
        return ParseResult(None, "no output (None)", repairs, "input")
    if isinstance(text, (bytes, bytearray)):
        if len(text) > 4 * max_chars:
            return ParseResult(None, f"output too long: {len(text)} bytes > {4 * max_chars}", repairs, "input")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            return ParseResult(None, f"output is not UTF-8: {_short(exc)}", repairs, "input")
        repairs.append("decode_bytes")
    if not isinstance(text, str):
        return ParseResult(None, f"output must be text, got {type(text).__name__}", repairs, "input")
    if len(text) > max_chars:
        return ParseResult(None, f"output too long: {len(text)} chars > {max_chars}", repairs, "input")
    if not isinstance(query, str):
        return ParseResult(None, f"query must be text, got {type(query).__name__}", repairs, "input")

    data, found_repairs, error = _extract_object(text)
    repairs += found_repairs
    if data is None:
        return ParseResult(None, error, repairs, "json")
    if _strip_whitespace(data):
        repairs.append("strip_whitespace")
    if _drop_repeated_labels(data):
        repairs.append("duplicate_category")
    errors = validation_errors(data, query)
    if errors:
        return ParseResult(None, _short("; ".join(errors)), repairs, "schema")
    try:  # strict types: the lax schema check would coerce "3", 3.0 or true into a weight
        model = QPResult.model_validate(data, strict=True)
    except ValidationError as exc:
        msgs = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {type(e['input']).__name__})"
            for e in exc.errors()
        ]
        return ParseResult(None, _short("wrong JSON type: " + "; ".join(msgs)), repairs, "schema")
    result = to_dict(model)
    bad = _bad_string(result)  # after validation: the structure is known to be shallow
    if bad:
        return ParseResult(None, bad, repairs, "schema")
    return ParseResult(result, None, repairs, "ok")


def parse_output(text: Any, query: Any, *, max_chars: int = MAX_INPUT_CHARS) -> ParseResult:
    """Parse and validate one completion for ``query``. Never raises, whatever ``text`` is.

    ``text`` is normally ``str``; UTF-8 ``bytes`` are decoded (repair ``decode_bytes``); anything else,
    ``None`` included, gives an error. Inputs over ``max_chars`` characters are refused outright.
    """
    try:
        res = _parse(text, query, max_chars)
    except Exception as exc:  # last line of defence: a parser bug must not kill a batch job
        logger.exception("parse_output failed unexpectedly")
        return ParseResult(None, _short(f"internal parser error: {type(exc).__name__}: {exc}"), [], "input")
    if res.repairs:
        logger.debug("parse_output repairs=%s", res.repairs)
    return res
