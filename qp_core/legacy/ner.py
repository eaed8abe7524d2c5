"""Named-entity recognition: a linear-chain CRF over characters (BIO tags), with a gazetteer.

Features are the character, its shape and a ±2 window, character bigrams, and whether a known entity of
the training data covers the position (a gazetteer, as industrial CRF taggers use). Gazetteer features of
the training rows come from the *other* fold's entities, so the CRF learns how far to trust the gazetteer
and still tags entities it has never seen from their context and shape.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter, defaultdict
from typing import Any, Iterable

from qp_core.normalize import compact
from qp_core.schema import entity_spans, entity_types

logger = logging.getLogger(__name__)

MAX_GAZ_LEN = 16


def char_shape(ch: str) -> str:
    if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
        return "H"
    if ch.isdigit():
        return "D"
    if ch.isascii() and ch.isalpha():
        return "A"
    if ch in "-_.+&'#":
        return "J"
    cat = unicodedata.category(ch)
    return "P" if cat.startswith("P") else ("S" if cat.startswith("S") else "O")


def build_gazetteer(entity_lists: Iterable[list[tuple[str, str]]]) -> dict[str, str]:
    """text -> its most frequent type over the training entities (texts of 2+ characters)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for ents in entity_lists:
        for text, etype in ents:
            if 2 <= len(text) <= MAX_GAZ_LEN:
                counts[text][etype] += 1
    return {t: c.most_common(1)[0][0] for t, c in counts.items()}


def gazetteer_tags(text: str, gazetteer: dict[str, str]) -> list[str]:
    """Greedy left-to-right longest match: 'B-type' / 'I-type' / '' per character."""
    tags = [""] * len(text)
    i = 0
    while i < len(text):
        for j in range(min(len(text), i + MAX_GAZ_LEN), i + 1, -1):
            etype = gazetteer.get(text[i:j])
            if etype:
                tags[i] = "B-" + etype
                for k in range(i + 1, j):
                    tags[k] = "I-" + etype
                i = j
                break
        else:
            i += 1
    return tags


def char_features(text: str, gazetteer: dict[str, str]) -> list[dict[str, Any]]:
    gz = gazetteer_tags(text, gazetteer)
    n = len(text)
    feats = []
    for i, ch in enumerate(text):
        f: dict[str, Any] = {"bias": 1.0, "c": ch, "s": char_shape(ch)}
        for off in (-2, -1, 1, 2):
            j = i + off
            if 0 <= j < n:
                f[f"c{off}"] = text[j]
                f[f"s{off}"] = char_shape(text[j])
            else:
                f[f"c{off}"] = "<B>" if j < 0 else "<E>"
        f["b-1"] = text[i - 1: i + 1] if i > 0 else "<B>" + ch
        f["b+1"] = text[i: i + 2] if i + 1 < n else ch + "<E>"
        f["s3"] = "".join(char_shape(c) for c in text[max(0, i - 1): i + 2])
        if gz[i]:
            f["gz"] = gz[i]
            f["gzt"] = gz[i][2:]
        if i == 0:
            f["BOS"] = 1.0
        if i == n - 1:
            f["EOS"] = 1.0
        feats.append(f)
    return feats


def bio_tags(text: str, entities: list[dict[str, str]]) -> list[str]:
    """Gold BIO tags of ``text`` (a compact query) from its unified entities; unplaceable ones are skipped."""
    tags = ["O"] * len(text)
    for span in entity_spans(entities, text):
        if span is None:
            continue
        s, e, t = span
        tags[s] = "B-" + t
        for k in range(s + 1, e):
            tags[k] = "I-" + t
    return tags


def spans_from_bio(tags: list[str]) -> list[tuple[int, int, str]]:
    """Well-formed spans from possibly ill-formed BIO (an I- without its B- starts a span)."""
    spans, start, cur = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        kind, _, etype = tag.partition("-")
        if kind == "I" and cur == etype and start is not None:
            continue
        if start is not None:
            spans.append((start, i, cur))
            start, cur = None, None
        if kind in ("B", "I") and etype:
            start, cur = i, etype
    return spans


class EntityTagger:
    def __init__(self, c1: float = 0.05, c2: float = 0.05, max_iterations: int = 150, folds: int = 2):
        self.c1, self.c2, self.max_iterations, self.folds = c1, c2, max_iterations, folds
        self.gazetteer: dict[str, str] = {}
        self.crf = None

    def fit(self, queries: list[str], entity_lists: list[list[dict[str, str]]]) -> "EntityTagger":
        import sklearn_crfsuite

        texts = [compact(q) for q in queries]
        pairs = [
            [(t[s:e], typ) for s, e, typ in (sp for sp in entity_spans(ents, t) if sp is not None)]
            for t, ents in zip(texts, entity_lists)
        ]
        self.gazetteer = build_gazetteer(pairs)
        fold_gaz = [
            build_gazetteer(p for i, p in enumerate(pairs) if i % self.folds != k) for k in range(self.folds)
        ]
        X = [char_features(t, fold_gaz[i % self.folds]) for i, t in enumerate(texts) if t]
        y = [bio_tags(t, ents) for t, ents in zip(texts, entity_lists) if t]
        self.crf = sklearn_crfsuite.CRF(
            algorithm="lbfgs", c1=self.c1, c2=self.c2, max_iterations=self.max_iterations,
            all_possible_transitions=True,
        )
        self.crf.fit(X, y)
        logger.info("NER CRF: %d sequences, gazetteer %d entries", len(X), len(self.gazetteer))
        return self

    def predict_many(self, queries: list[str]) -> list[list[dict[str, str]]]:
        types = set(entity_types())
        texts = [compact(q) for q in queries]
        idx = [i for i, t in enumerate(texts) if t]
        tagged = self.crf.predict([char_features(texts[i], self.gazetteer) for i in idx]) if idx else []
        out: list[list[dict[str, str]]] = [[] for _ in texts]
        for i, tags in zip(idx, tagged):
            out[i] = [
                {"text": texts[i][s:e], "type": t} for s, e, t in spans_from_bio(tags) if t in types
            ]
        return out

    def predict(self, query: str) -> list[dict[str, str]]:
        return self.predict_many([query])[0]
