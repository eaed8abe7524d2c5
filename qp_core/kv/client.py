"""Reader for downstream services: ``QPClient(url).mget(queries)`` / ``.get(query)``.

Per batch: one GET of the pointer, then one pipelined MGET of ``qp:<ns>:<hash(normalise(q))>``.
Because every key of the batch is built from the single namespace read first, an answer can never
mix two models; because the pointer only moves to a namespace that passed its coverage gate, and
a namespace that stops being active keeps its keys for ``retired_ttl_s``, a batch that raced a flip
still reads a complete namespace. A miss is ``None`` so the caller falls back to its own signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qp_core.kv.layout import Keys, decode_value
from qp_core.kv.settings import KVSettings, connect, load_kv_settings
from qp_core.normalize import query_key


class QPClient:
    def __init__(self, url: str | None = None, *, settings: KVSettings | None = None, redis=None):
        self.settings = settings or load_kv_settings()
        self.r = redis if redis is not None else connect(url, self.settings)
        self.keys = Keys(self.settings.prefix)

    def namespace(self) -> str | None:
        """The active namespace now (None before the first activation)."""
        return self.r.get(self.keys.active) or None

    def mget_with_namespace(self, queries: Sequence[str]) -> tuple[str | None, list[dict[str, Any] | None]]:
        """(namespace read, one result or None per query, in order)."""
        ns = self.r.get(self.keys.active)
        if not ns or not queries:
            return ns or None, [None] * len(queries)
        keys = [self.keys.result(ns, query_key(q)) for q in queries]
        chunk = self.settings.mget_chunk
        if len(keys) <= chunk:
            raws = self.r.mget(keys)
        else:
            pipe = self.r.pipeline(transaction=False)
            for i in range(0, len(keys), chunk):
                pipe.mget(keys[i:i + chunk])
            raws = [v for part in pipe.execute() for v in part]
        return ns, [decode_value(v) for v in raws]

    def mget(self, queries: Sequence[str]) -> list[dict[str, Any] | None]:
        """One result dict (unified fields + q, src, dt, v) or None per query."""
        return self.mget_with_namespace(queries)[1]

    def get(self, query: str) -> dict[str, Any] | None:
        return self.mget([query])[0]

    def close(self) -> None:
        self.r.close()

    def __enter__(self) -> QPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
