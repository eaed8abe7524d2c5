"""The in-memory BM25 scorer (``qp_core.nearline.bm25``) against a brute-force reference, no Spark.

Weights are multiples of 0.5 so sums are exact whatever their order and score ties are frequent: the tie
order (smaller ``nid`` first), the ``min_score`` cut and queries with fewer than ``m`` candidates are all hit.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from qp_core.nearline import bm25


def reference(postings: list[tuple[str, int, float]], queries: list[str], m: int, min_score: float):
    by_term: dict[str, list[tuple[int, float]]] = {}
    for term, nid, w in postings:
        by_term.setdefault(term, []).append((nid, w))
    out = set()
    for qid, query in enumerate(queries):
        scores: dict[int, float] = {}
        for term in set(query.split()):
            for nid, w in by_term.get(term, []):
                scores[nid] = scores.get(nid, 0.0) + w
        ranked = sorted((n for n, s in scores.items() if s > min_score), key=lambda n: (-scores[n], n))
        out |= {(qid, n, scores[n], r) for r, n in enumerate(ranked[:m], start=1)}
    return out


@pytest.mark.parametrize("seed", range(6))
def test_scorer_matches_brute_force_with_ties_cuts_and_short_rows(seed, monkeypatch):
    monkeypatch.setattr(bm25, "CHUNK_ROWS", 7)  # several chunks per batch, boundaries inside the batches
    rng = random.Random(seed)
    terms = [f"t{i}" for i in range(12)]
    postings = sorted({(t, n): rng.choice([0.5, 1.0, 1.5]) for t in terms for n in rng.sample(range(40), rng.randint(0, 9))}.items())
    postings = [(t, n, w) for (t, n), w in postings]
    queries = [" ".join(rng.sample(terms + ["unknown"], rng.randint(0, 4))) for _ in range(60)]
    m, min_score = rng.choice([1, 3, 10]), rng.choice([0.0, 1.0])
    index = bm25.PostingsIndex.from_arrow(pa.table(
        {"term": [p[0] for p in postings], "nid": [p[1] for p in postings], "w": [p[2] for p in postings]}))
    batches = [pa.RecordBatch.from_pydict({"qid": list(range(a, a + 20)), "query_norm": queries[a:a + 20]})
               for a in range(0, 60, 20)]
    got = {tuple(r.values()) for b in bm25.score_batches(batches, index, m, min_score) for r in b.to_pylist()}
    want = reference(postings, queries, m, min_score)
    assert want and got == want
