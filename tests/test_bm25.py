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
    postings = [(t, n, rng.choice([0.5, 1.0, 1.5]))
                for t in terms for n in sorted(rng.sample(range(40), rng.randint(0, 9)))]
    queries = [" ".join(rng.sample(terms + ["unknown"], rng.randint(0, 4))) for _ in range(60)]
    m, min_score = rng.choice([1, 3, 10]), rng.choice([0.0, 1.0])
    index = bm25.PostingsIndex.from_arrow(pa.table(
        {"term": [p[0] for p in postings], "nid": [p[1] for p in postings], "w": [p[2] for p in postings]}))
    got = {(int(r), int(n), float(sc), int(k)) for part in bm25.top_notes(index, queries, m, min_score)
           for r, n, sc, k in zip(*part)}
    want = reference(postings, queries, m, min_score)
    assert want and got == want


def test_notes_batches_give_every_query_its_notes_texts_best_first():
    postings = [("a", 1, 1.0), ("a", 2, 2.0), ("b", 1, 1.5), ("b", 3, 0.5), ("c", 3, 1.0)]
    index = bm25.PostingsIndex.from_arrow(pa.table(
        {"term": [p[0] for p in postings], "nid": [p[1] for p in postings], "w": [p[2] for p in postings]}))
    texts = bm25.texts_by_nid(pa.table({"nid": [3, 1, 2], "note_text": ["three", "one", "two"]}))
    batch = pa.RecordBatch.from_pydict({"query_norm": ["a", "z", "a b", "c"], "query_key": ["ka", "kz", "kab", "kc"]})
    got = [r for b in bm25.notes_batches([batch], index, texts, top_m=2, min_score=0.0) for r in b.to_pylist()]
    # "a b": note 1 = 2.5, note 2 = 2.0, note 3 = 0.5 (cut by top 2); "z" has no note.
    assert got == [{"query_norm": "a", "query_key": "ka", "notes": ["two", "one"]},
                   {"query_norm": "z", "query_key": "kz", "notes": []},
                   {"query_norm": "a b", "query_key": "kab", "notes": ["one", "two"]},
                   {"query_norm": "c", "query_key": "kc", "notes": ["three"]}]
