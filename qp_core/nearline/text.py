"""Per-row text logic of the nearline jobs, and its Arrow-batch wrappers for ``mapInArrow``.

Everything here is plain Python so it can be unit-tested without Spark and so that Spark uses exactly the
shared functions (``qp_core.normalize``) instead of an SQL re-implementation that would drift from what the
KV reader hashes.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from qp_core.normalize import normalize_query, query_key

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

#: Quarantine reasons, in the order they are checked (``undecodable``: the bytes are not UTF-8).
MALFORMED_REASONS = ("null", "undecodable", "empty", "too_long", "symbols_only")
UNDECODABLE = "undecodable"


def malformed_reason(raw: str | None, norm: str, max_chars: int) -> str | None:
    """Why a logged query cannot be processed, or None when it is fine.

    ``norm`` is ``normalize_query(raw)``. Control characters are removed by normalisation, so a query
    with them is malformed only if nothing usable is left.
    """
    if raw is None:
        return "null"
    if not norm:
        return "empty"
    if len(norm) > max_chars:
        return "too_long"
    if not any(unicodedata.category(ch)[0] in "LN" for ch in norm):
        return "symbols_only"  # emoji / punctuation / symbols only
    return None


def decode_strings(column: "pa.Array") -> tuple[list[str | None], list[bool]]:
    """An Arrow string column as Python strings, and which values were not valid UTF-8 (those become None).

    Parquet and Spark carry string bytes unchecked, so one bad row would otherwise raise
    ``UnicodeDecodeError`` in ``to_pylist`` and fail the whole day. The common case (a valid batch) costs one
    validation pass; only a batch with a bad value is decoded value by value.
    """
    import pyarrow as pa

    try:
        column.validate(full=True)
        return column.to_pylist(), [False] * len(column)
    except pa.ArrowInvalid:
        pass
    binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
    values: list[str | None] = []
    bad: list[bool] = []
    for raw in column.view(binary).to_pylist():
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            values.append(None)
            bad.append(True)
    return values, bad


#: Characters whose strings, written as single-space-separated runs, normalise by lowering their ASCII
#: letters and nothing else: ASCII letters and digits and the CJK Unified Ideographs block (no NFKC mapping,
#: no control, all letters or numbers, and case only on A-Z). For such a query Spark computes ``query_norm``
#: with a regex and ``translate`` — no Python — and it is well formed up to the length limit (a property
#: test over this alphabet checks both). ``translate``, not ``lower``: Java lowercases non-ASCII strings in
#: the JVM's default locale (a Turkish locale maps "I" to a dotless "ı").
LOWER_IS_NORMAL_CHARS = "A-Za-z0-9\u4e00-\u9fff"
#: The same, as a Java regular expression for Spark's ``rlike`` (``\A``/``\z``: no line-terminator leeway).
LOWER_IS_NORMAL_JAVA = rf"\A[{LOWER_IS_NORMAL_CHARS}]+(?: [{LOWER_IS_NORMAL_CHARS}]+)*\z"
ASCII_UPPER, ASCII_LOWER = string.ascii_uppercase, string.ascii_lowercase

#: Normalised strings each Python worker remembers across batches and tasks (Spark reuses its workers): the
#: head of a Zipf day repeats in every batch, so most lookups hit. Bounded: cleared when full.
_MEMO_MAX = 200_000
_memo: dict[tuple[str | None, int], tuple[str | None, str | None]] = {}


def _normalize_one(raw: str | None, max_chars: int) -> tuple[str | None, str | None]:
    """(query_norm, malformed) of one raw string, memoised per worker."""
    hit = _memo.get((raw, max_chars))
    if hit is None:
        norm = normalize_query(raw) if raw is not None else None
        hit = (norm, malformed_reason(raw, norm or "", max_chars))
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[(raw, max_chars)] = hit
    return hit


def normalize_batches(
    batches: Iterable["pa.RecordBatch"], max_chars: int, well_formed: bool = False
) -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: raw query-log batches -> their other columns + ``query_norm``, ``malformed``
    (None when usable) and ``bad_query`` (the raw string when malformed, for the quarantine).

    ``well_formed=True``: only the usable rows come back, as their other columns + ``query_norm``.

    Python runs once per distinct string of a batch (and not even that for strings the worker has seen):
    the ``query`` column is dictionary-encoded by Arrow, the dictionary's values are normalised, and the new
    columns are gathered back to every row with ``take`` — C loops, not Python ones. So a step can
    normalise every row of a day in place, with no join of the rows back to a table of distinct strings (a
    shuffle and sort of every row of the day). The null query is one dictionary
    entry (reason ``null``); a value whose bytes are not UTF-8 gets reason ``undecodable``. No key here:
    ``query_key`` is a hash of ``query_norm``, computed once per query after aggregation (``key_batches``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        query = batch.column(batch.schema.get_field_index("query"))
        encoded = pc.dictionary_encode(query, null_encoding="encode")
        raw, undecodable = decode_strings(encoded.dictionary)
        norms, reasons = [], []
        for q, bad in zip(raw, undecodable):
            norm, reason = (None, UNDECODABLE) if bad else _normalize_one(q, max_chars)
            norms.append(norm)
            reasons.append(reason)
        others = batch.drop_columns(["query"])
        if well_formed:
            usable = pc.take(pa.array([r is None for r in reasons]), encoded.indices)
            others = others.filter(usable)
            norm = pc.take(pa.array(norms, pa.string()), pc.filter(encoded.indices, usable))
            yield pa.RecordBatch.from_arrays([*others.columns, norm], names=[*others.schema.names, "query_norm"])
            continue
        reason = pc.take(pa.array(reasons, pa.string()), encoded.indices)
        yield pa.RecordBatch.from_arrays(
            [*others.columns, pc.take(pa.array(norms, pa.string()), encoded.indices), reason,
             pc.if_else(pc.is_null(reason), pa.scalar(None, query.type), query)],
            names=[*others.schema.names, "query_norm", "malformed", "bad_query"],
        )


def key_batches(batches: Iterable["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: append ``query_key`` (``normalize.query_key`` of ``query_norm``; None where
    ``malformed`` is set) — once per distinct query of a day, after its rows were aggregated."""
    import pyarrow as pa

    for batch in batches:
        norms = batch.column(batch.schema.get_field_index("query_norm")).to_pylist()
        malformed = batch.column(batch.schema.get_field_index("malformed")).to_pylist()
        keys = pa.array([query_key(n) if m is None else None for n, m in zip(norms, malformed)], pa.string())
        yield pa.RecordBatch.from_arrays([*batch.columns, keys], names=[*batch.schema.names, "query_key"])


# --- retrieval tokens -----------------------------------------------------------------------------------
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")


def tokenize(text: str | None, cjk_unigrams: bool = False, normalized: bool = False) -> list[str]:
    """Retrieval terms: CJK runs give character bigrams, other scripts give whole words.

    Chinese has no spaces, so words are approximated by adjacent character pairs (the bigram index of
    Lucene's CJKAnalyzer); a lone CJK character between non-CJK text is kept as a unigram. Latin brand
    names and product codes ("retro", "1c1") stay whole words. ``cjk_unigrams=True`` adds every character
    as a unigram too: measured on the default world (3,000 notes, 12k queries), unigrams made 82% of the
    query-term x posting join (8.3M of 10M rows) and the context step ~10x slower, while adding only
    weak, high-df evidence — so they are off by default (``conf/sampling.yaml`` ``bm25_cjk_unigrams``).
    ``normalized=True`` skips normalising a text that already is (a ``query_norm``).
    """
    norm = (text or "") if normalized else normalize_query(text)
    out: list[str] = []
    for match in _TOKEN.finditer(norm):
        run = match.group(0)
        if _is_cjk(run[0]):
            if cjk_unigrams or len(run) == 1:
                out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(run)
    return out


_CJK_CHAR = re.compile(rf"[{_CJK}]")


def _is_cjk(ch: str) -> bool:
    return _CJK_CHAR.match(ch) is not None


def tokenize_batches(
    batches: Iterable["pa.RecordBatch"], id_col: str, text_cols: tuple[str, ...], cjk_unigrams: bool = False
) -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: (id, text columns...) -> (id, term, tf, dl), one row per distinct term.

    A list column (tags) is joined with spaces. ``dl`` is the document's token count (BM25 length norm).
    The id keeps its Arrow type (a string key or an integer id).
    """
    import pyarrow as pa

    for batch in batches:
        id_type = batch.schema.field(id_col).type
        ids = batch.column(batch.schema.get_field_index(id_col)).to_pylist()
        cols = [batch.column(batch.schema.get_field_index(c)).to_pylist() for c in text_cols]
        out_id: list[str] = []
        out_term: list[str] = []
        out_tf: list[int] = []
        out_dl: list[int] = []
        for i, doc_id in enumerate(ids):
            parts = []
            for col in cols:
                value = col[i]
                if isinstance(value, list):
                    value = " ".join(str(v) for v in value if v)
                if value:
                    parts.append(str(value))
            tokens = tokenize(" ".join(parts), cjk_unigrams)
            counts: dict[str, int] = {}
            for tok in tokens:
                counts[tok] = counts.get(tok, 0) + 1
            for term, tf in counts.items():
                out_id.append(doc_id)
                out_term.append(term)
                out_tf.append(tf)
                out_dl.append(len(tokens))
        yield pa.RecordBatch.from_arrays(
            [pa.array(out_id, id_type), pa.array(out_term, pa.string()),
             pa.array(out_tf, pa.int64()), pa.array(out_dl, pa.int64())],
            names=[id_col, "term", "tf", "dl"],
        )


def render_note_batches(batches: Iterable["pa.RecordBatch"], id_col: str = "note_id") -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: (id, title, body, tags) -> (id, note_text) via ``prompt.render_note``; the id keeps
    its Arrow type."""
    import pyarrow as pa

    from qp_core.prompt import render_note

    for batch in batches:
        d = batch.to_pydict()
        texts = [render_note(t or "", b or "", list(g or [])) for t, b, g in zip(d["title"], d["body"], d["tags"])]
        yield pa.RecordBatch.from_arrays(
            [batch.column(batch.schema.get_field_index(id_col)), pa.array(texts, pa.string())],
            names=[id_col, "note_text"],
        )
