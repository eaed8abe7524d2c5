"""The KV storage format (docs/kv-spec.md): key names, namespace ids and the value encoding.

Everything that decides what bytes sit under which key lives here, so the writer
(:mod:`qp_core.kv.publisher`), the reader (:mod:`qp_core.kv.client`) and the spec cannot drift.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from qp_core.normalize import NORMALIZE_VERSION, query_key
from qp_core.schema import FIELDS, SCHEMA_VERSION

KV_FORMAT_VERSION = 2  # 2: control keys moved under the {prefix} hash tag, retirement by deadline
SOURCES = ("model", "fallback")
_NS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")


def namespace_for(model_version: str, rules_version: str, prompt_version: str | int) -> str:
    """Namespace id for one (model, rules, prompt) triple — also bound to the schema and normaliser versions.

    A short hash (``n`` + 12 hex) rather than the readable triple: it is repeated in every key, so at
    millions of keys its length is memory; the readable parts live in the namespace's metadata hash.
    Changing the schema or the query normalisation changes every namespace, as it must (keys or values
    would no longer match what readers expect).
    """
    ident = f"{model_version}|{rules_version}|{prompt_version}|s{SCHEMA_VERSION}|n{NORMALIZE_VERSION}"
    return "n" + hashlib.blake2b(ident.encode("utf-8"), digest_size=6).hexdigest()


def check_namespace(ns: str) -> str:
    if not isinstance(ns, str) or not _NS_RE.match(ns):
        raise ValueError(f"invalid namespace {ns!r}: 1-64 chars of [A-Za-z0-9._-], not starting with . _ -")
    return ns


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (default ``qp``).

    Result keys ``qp:<ns>:<query_key>`` carry no hash tag, so a cluster spreads them over every slot.
    Control keys (pointer, history, events, registry, metadata, pin, retire schedule, leases) all carry
    the hash tag ``{qp}`` — ``qp:{qp}:active`` — so they live in ONE slot and every lifecycle Lua script
    or MULTI touches a single node. A namespace id cannot contain braces, so ``SCAN MATCH qp:<ns>:*``
    never meets a control key.
    """

    prefix: str = "qp"

    def result(self, ns: str, qkey: str) -> str:
        return f"{self.prefix}:{ns}:{qkey}"

    def result_pattern(self, ns: str) -> str:
        return f"{self.prefix}:{ns}:*"

    def for_query(self, ns: str, query: str) -> str:
        return self.result(ns, query_key(query))

    def control(self, name: str) -> str:
        return f"{self.prefix}:{{{self.prefix}}}:{name}"

    @property
    def active(self) -> str:
        return self.control("active")

    @property
    def history(self) -> str:
        return self.control("history")

    @property
    def events(self) -> str:
        return self.control("events")

    @property
    def namespaces(self) -> str:
        return self.control("namespaces")

    @property
    def pin(self) -> str:
        """JSON ``{"ns","at","by","reason","registry_version"}`` while a rollback/operator pin holds the pointer."""
        return self.control("pin")

    @property
    def retiring(self) -> str:
        """Sorted set: retired namespace -> Unix time after which the janitor deletes it."""
        return self.control("retiring")

    def meta(self, ns: str) -> str:
        return self.control(f"meta:{ns}")

    def lease(self, ns: str) -> str:
        """Publish lease of one namespace: a random token with a PX expiry, renewed per batch."""
        return self.control(f"lease:{ns}")


def is_query_key(value: str) -> bool:
    return bool(_KEY_RE.match(value or ""))


def encode_value(result: dict[str, Any], query_norm: str, src: str, dt: str) -> str:
    """Compact JSON: the unified fields in task order, then ``q``, ``src``, ``dt``, ``v``."""
    payload = {k: result[k] for k in FIELDS}
    payload.update(q=query_norm, src=src, dt=dt, v=SCHEMA_VERSION)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def decode_value(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return json.loads(raw)
