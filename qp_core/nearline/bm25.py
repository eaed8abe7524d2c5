"""BM25 top m per query against the pool's postings held in memory, scored a whole Arrow batch at a time.

Why, when ``sql/context_bm25.sql`` does the same in Spark SQL: with every distinct query of a day as a
target (no generation budget), the SQL join expands each query into all its candidate (query, note)
pairs as rows — every note sharing a term — then sums and sorts them for the top m per query. Here the
pool's postings are one broadcast index (compressed sparse rows: a term's postings are a contiguous
slice), and a chunk of queries is scored with a handful of numpy calls: gather the postings of every
(query, term), sum per (query, note) with ``unique`` + ``bincount``, and take each query's top m by
(score desc, note) with ``m`` segmented-max passes (no sort of all pairs). Python runs once per query
(tokenising); the pairs never become rows, and each query leaves with its notes' rendered texts. Scores,
the ``min_score`` cut and the tie order (``nid``, the rank of ``note_id``) are the SQL file's; ``context``
uses that file when the pool is too big to broadcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qp_core.nearline.text import tokenize

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

#: Spark schema of ``notes_batches``' output (that of ``context.candidate_notes``).
NOTES_SCHEMA = "query_norm string, query_key string, notes array<string>"


@dataclass(frozen=True)
class PostingsIndex:
    """The pool's postings by term: those of term ``terms[t]`` are rows ``indptr[t]:indptr[t + 1]``."""

    terms: dict[str, int]
    indptr: np.ndarray  # int64, len(terms) + 1
    nids: np.ndarray  # int64, one per posting
    weights: np.ndarray  # float64, the posting's BM25 term weight

    @classmethod
    def from_arrow(cls, postings: "pa.Table") -> "PostingsIndex":
        """From rows (term, nid, w), as ``sql/context_bm25_postings.sql`` yields them."""
        table = postings.sort_by([("term", "ascending"), ("nid", "ascending")])
        terms: dict[str, int] = {}
        starts: list[int] = []
        for i, term in enumerate(table.column("term").to_pylist()):
            if term not in terms:
                terms[term] = len(starts)
                starts.append(i)
        indptr = np.array([*starts, table.num_rows], dtype=np.int64)
        return cls(terms, indptr, table.column("nid").to_numpy().astype(np.int64),
                   table.column("w").to_numpy().astype(np.float64))


#: Queries scored together: their (query, note) pairs (~100 a query on the bench's pool) stay in the CPU
#: caches. Measured on 40k bench queries: 500-2,000 rows a chunk 0.75 s, the whole 10k-row batch 1.08 s.
CHUNK_ROWS = 2000


def texts_by_nid(rendered: "pa.Table") -> "pa.Array":
    """Rows (nid, note_text) as one string array indexed by ``nid`` (ids without a note are null)."""
    import pyarrow as pa

    nids = rendered.column("nid").to_numpy()
    texts: list[str | None] = [None] * (int(nids.max()) + 1 if len(nids) else 0)
    for nid, text in zip(nids.tolist(), rendered.column("note_text").to_pylist()):
        texts[nid] = text
    return pa.array(texts, pa.string())


def notes_batches(
    batches: Iterable["pa.RecordBatch"], index, texts, top_m: int, min_score: float, cjk_unigrams: bool = False
) -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: (query_norm, query_key) -> the same + ``notes``, the rendered text of each query's
    top ``top_m`` notes, best first (empty when no note scores above ``min_score``).

    ``index`` (a ``PostingsIndex``) and ``texts`` (``texts_by_nid``) may be Spark broadcasts. The texts are
    looked up here, so the chosen (query, note) pairs never become Spark rows to join and regroup either.
    """
    import pyarrow as pa

    idx: PostingsIndex = getattr(index, "value", index)
    text_of: pa.Array = getattr(texts, "value", texts)
    for batch in batches:
        norm = batch.column(batch.schema.get_field_index("query_norm"))
        queries = norm.to_pylist()
        found = list(top_notes(idx, queries, top_m, min_score, cjk_unigrams))
        row, nid, _, rank = (np.concatenate(p) for p in zip(*found)) if found else (np.empty(0, np.int64),) * 4
        order = np.lexsort((rank, row))  # by query, best first
        offsets = pa.array(np.r_[0, np.cumsum(np.bincount(row, minlength=len(queries)))], pa.int32())
        notes = pa.ListArray.from_arrays(offsets, text_of.take(pa.array(nid[order], pa.int64())))
        key = batch.column(batch.schema.get_field_index("query_key"))
        yield pa.RecordBatch.from_arrays([norm, key, notes], names=["query_norm", "query_key", "notes"])


def top_notes(
    idx: PostingsIndex, queries: list[str | None], top_m: int, min_score: float, cjk_unigrams: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(row, nid, score, rank) of each query's top ``top_m`` notes with a score above ``min_score``, a chunk of
    ``CHUNK_ROWS`` queries at a time; ``row`` indexes ``queries`` (normalised query strings)."""
    width = int(idx.nids.max()) + 1 if len(idx.nids) else 1
    rows: list[int] = []
    tids: list[int] = []
    for i, query in enumerate(queries):
        # sorted: the same sum order every run
        for term in sorted(set(tokenize(query, cjk_unigrams, normalized=True))):
            t = idx.terms.get(term)
            if t is not None:
                rows.append(i)
                tids.append(t)
    row_of, tid_of = np.asarray(rows, dtype=np.int64), np.asarray(tids, dtype=np.int64)
    bounds = np.searchsorted(row_of, np.arange(0, len(queries) + CHUNK_ROWS, CHUNK_ROWS))
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        row, nid, score = _sum_by_pair(idx, row_of[a:b], tid_of[a:b], width)
        keep = score > min_score
        row, nid, score = row[keep], nid[keep], score[keep]
        pick, rank = _top_per_row(row, score, top_m)
        yield row[pick], nid[pick], score[pick], rank


def _sum_by_pair(idx: PostingsIndex, rows: np.ndarray, tids: np.ndarray, width: int):
    """(row, nid, score) of every (query row, note) pair sharing a term, sorted by (row, nid)."""
    starts, lens = idx.indptr[tids], idx.indptr[tids + 1] - idx.indptr[tids]
    # Gather: for each (query, term), the term's postings slice, concatenated.
    pos = np.arange(lens.sum()) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    pairs, inverse = np.unique(np.repeat(rows, lens) * width + idx.nids[pos], return_inverse=True)
    return pairs // width, pairs % width, np.bincount(inverse.ravel(), weights=idx.weights[pos])


def _top_per_row(row: np.ndarray, score: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and ranks of each row's top ``m`` pairs by (score desc, nid asc); pairs sorted by (row, nid).

    ``m`` passes of a segmented max instead of sorting every pair (measured on the bench's queries: sorting
    all pairs and ranking them was a third of the scorer's time): a pass takes, per row, the first
    (smallest-nid) pair at the row's max.
    """
    if m <= 0 or not len(row):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
    left = score.copy()
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    lens = np.diff(np.r_[starts, len(row)])
    picks, ranks = [], []
    for rank in range(1, m + 1):
        at_max = np.flatnonzero((left == np.repeat(np.maximum.reduceat(left, starts), lens)) & (left > -np.inf))
        if not len(at_max):  # every row has fewer than m pairs
            break
        first = at_max[np.r_[True, row[at_max[1:]] != row[at_max[:-1]]]]
        picks.append(first)
        ranks.append(np.full(len(first), rank, dtype=np.int32))
        left[first] = -np.inf
    return np.concatenate(picks), np.concatenate(ranks)
