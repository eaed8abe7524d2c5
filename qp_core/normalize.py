"""The one query normalisation and key-hash function, shared by writer and reader.

Downstream services call ``query_key`` (through ``QPClient``) with raw user text; the
nearline pipeline calls it with logged text. Both must map to the same Redis key, so there
is exactly one implementation and it is versioned: changing it is a KV-format change.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

NORMALIZE_VERSION = 1
_WS = re.compile(r"\s+")
# C0/C1 control characters, zero-width/format characters (Cc, Cf) and lone surrogates (Cs: not encodable
# as UTF-8, so ``query_key`` would raise) are removed.
_CTRL = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff\ud800-\udfff]")
_MAX_PASSES = 8


def _normalize_pass(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _CTRL.sub(" ", text)
    return _WS.sub(" ", text).strip()


def _is_fixed(text: str) -> bool:
    """True when a pass would not change ``text`` (its output is already free of controls, stripped and
    collapsed, so only the NFKC and case-fold steps can still move it)."""
    return unicodedata.is_normalized("NFKC", text) and text.casefold() == text


def normalize_query(text: str | None) -> str:
    """NFKC, case-fold, drop control characters, trim and collapse whitespace — repeated to a fixed point.

    Returns "" for None. Full-width Latin/digits become ASCII via NFKC ("ＩＰＨＯＮＥ１５" -> "iphone15").

    Why repeated: one pass is not idempotent. Case-folding can undo NFKC ("ß" + U+0301 folds to "ss" + U+0301,
    which NFKC then composes to "sś"; U+0345 folds to a spacing iota, reordering combining marks), and a
    removed control character can leave a combining mark behind a space. A query whose normalised form
    normalises to something else gets a key the publisher refuses every day, so the function iterates until
    a pass changes nothing (two passes for those inputs, one for everything else). Only such inputs, never
    published, get a different result than the single pass did, so ``NORMALIZE_VERSION`` is unchanged.
    """
    if text is None:
        return ""
    out = _normalize_pass(str(text))
    for _ in range(_MAX_PASSES):
        if _is_fixed(out):
            break
        out = _normalize_pass(out)
    return out


def compact(text: str) -> str:
    """Normalised text with all whitespace removed: the string spans are measured on."""
    return _WS.sub("", normalize_query(text))


def query_key(text: str | None) -> str:
    """Stable 32-hex-digit hash of the normalised query (blake2b-128). Never raw user text in keys."""
    return hashlib.blake2b(normalize_query(text).encode("utf-8"), digest_size=16).hexdigest()
