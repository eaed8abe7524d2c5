"""BM25 top m per query against the pool's postings held in memory, scored a whole Arrow batch at a time.

Why, when ``sql/context_bm25.sql`` does the same in Spark SQL: with every distinct query of a day as a
target (no generation budget), the SQL join expands each query into all its candidate (query, note)
pairs as rows — every note sharing a term — then sums and sorts them for the top m per query. Here the
pool's postings are one broadcast index (compressed sparse rows: a term's postings are a contiguous
slice), and a batch of ~10k queries is scored with a handful of numpy calls: gather the postings of every (query, term), sum per (query, note) with
``unique`` + ``bincount``, order by (query, score desc, note) with ``lexsort``. Python runs once per query
(tokenising); the pairs never become rows. Scores, the ``min_score`` cut and the tie order (``nid``, the
rank of ``note_id``) are the SQL file's; ``context`` uses that file when the pool is too big to broadcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qp_core.nearline.text import tokenize

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

#: Arrow/Spark schema of the scorer's output (that of ``sql/context_bm25.sql``).
TOP_SCHEMA = "qid long, nid long, score double, note_rank int"


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


def score_batches(
    batches: Iterable["pa.RecordBatch"], index, top_m: int, min_score: float, cjk_unigrams: bool = False
) -> Iterator["pa.RecordBatch"]:
    """``mapInArrow`` body: (qid, query_norm) -> (qid, nid, score, note_rank), the top ``top_m`` notes of
    each query with a score above ``min_score``. ``index`` is a ``PostingsIndex`` or a Spark broadcast of one."""
    import pyarrow as pa

    idx: PostingsIndex = getattr(index, "value", index)
    for batch in batches:
        qids = batch.column(batch.schema.get_field_index("qid")).to_numpy()
        rows: list[int] = []
        tids: list[int] = []
        for i, query in enumerate(batch.column(batch.schema.get_field_index("query_norm")).to_pylist()):
            for term in sorted(set(tokenize(query, cjk_unigrams))):  # sorted: the same sum order every run
                t = idx.terms.get(term)
                if t is not None:
                    rows.append(i)
                    tids.append(t)
        if not rows:
            continue
        t = np.asarray(tids, dtype=np.int64)
        starts, lens = idx.indptr[t], idx.indptr[t + 1] - idx.indptr[t]
        # Gather: for each (query, term), the term's postings slice, concatenated.
        pos = np.arange(lens.sum()) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
        pair_row = np.repeat(np.asarray(rows, dtype=np.int64), lens)
        width = int(idx.nids.max()) + 1
        pairs, inverse = np.unique(pair_row * width + idx.nids[pos], return_inverse=True)
        score = np.bincount(inverse.ravel(), weights=idx.weights[pos])
        row, nid = pairs // width, pairs % width
        keep = score > min_score
        row, nid, score = row[keep], nid[keep], score[keep]
        order = np.lexsort((nid, -score, row))  # by query, then score descending, then note
        row, nid, score = row[order], nid[order], score[order]
        first = np.r_[True, row[1:] != row[:-1]]
        rank = np.arange(len(row)) - np.maximum.accumulate(np.where(first, np.arange(len(row)), 0)) + 1
        top = rank <= top_m
        yield pa.RecordBatch.from_arrays(
            [pa.array(qids[row[top]], pa.int64()), pa.array(nid[top], pa.int64()),
             pa.array(score[top], pa.float64()), pa.array(rank[top], pa.int32())],
            names=["qid", "nid", "score", "note_rank"],
        )
