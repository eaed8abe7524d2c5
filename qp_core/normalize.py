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
# C0/C1 control characters and zero-width/format characters (Cc, Cf) are removed.
_CTRL = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def normalize_query(text: str | None) -> str:
    """NFKC, case-fold, drop control characters, trim and collapse whitespace.

    Returns "" for None. Full-width Latin/digits become ASCII via NFKC ("ＩＰＨＯＮＥ１５" -> "iphone15").
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = _CTRL.sub(" ", text)
    return _WS.sub(" ", text).strip()


def compact(text: str) -> str:
    """Normalised text with all whitespace removed: the string spans are measured on."""
    return _WS.sub("", normalize_query(text))


def query_key(text: str | None) -> str:
    """Stable 32-hex-digit hash of the normalised query (blake2b-128). Never raw user text in keys."""
    return hashlib.blake2b(normalize_query(text).encode("utf-8"), digest_size=16).hexdigest()
