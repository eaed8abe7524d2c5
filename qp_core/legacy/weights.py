"""Term weighting: a logistic-regression classifier of the 0–3 level of each segment.

It sees the segment and its neighbours only (text, shape, length, position, the words either side) plus
one coarse cue about the rest of the query: the levels the *other* words usually had in training (a
product type weighs 3 alone but 2 beside a brand). It weights whatever segments it is given, so in the
pipeline it inherits the segmenter's mistakes — the error propagation the paper's unified model removes.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Any

from qp_core.legacy.ner import char_shape
from qp_core.schema import MAX_WEIGHT

logger = logging.getLogger(__name__)


def word_shape(w: str) -> str:
    shape = "".join(sorted({char_shape(c) for c in w}))
    return shape or "E"


class TermWeighter:
    def __init__(self, C: float = 2.0):
        self.C = C
        self.prior: dict[str, int] = {}  # word -> its majority training level
        self.default_level = 1
        self.vec = None
        self.clf = None

    def _features(self, segs: list[str], i: int) -> dict[str, Any]:
        w = segs[i]
        n = len(segs)
        f: dict[str, Any] = {
            "w=" + w: 1.0,
            "shape=" + word_shape(w): 1.0,
            "len=" + str(min(len(w), 6)): 1.0,
            "first=" + w[:1]: 1.0,
            "last=" + w[-1:]: 1.0,
            "pos=" + ("only" if n == 1 else "first" if i == 0 else "last" if i == n - 1 else "mid"): 1.0,
            "nseg=" + str(min(n, 6)): 1.0,
            "prev=" + (segs[i - 1] if i > 0 else "<B>"): 1.0,
            "next=" + (segs[i + 1] if i + 1 < n else "<E>"): 1.0,
            "prevshape=" + (word_shape(segs[i - 1]) if i > 0 else "<B>"): 1.0,
            "nextshape=" + (word_shape(segs[i + 1]) if i + 1 < n else "<E>"): 1.0,
        }
        if w in self.prior:
            f["prior=" + str(self.prior[w])] = 1.0
        else:
            f["unknown"] = 1.0
        others = Counter(self.prior.get(s, -1) for j, s in enumerate(segs) if j != i)
        for level, cnt in others.items():
            f[f"ctx{level}"] = float(min(cnt, 3))
        return f

    def fit(self, segment_lists: list[list[str]], weight_lists: list[list[int]]) -> "TermWeighter":
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression

        counts: dict[str, Counter[int]] = defaultdict(Counter)
        all_levels: Counter[int] = Counter()
        for segs, ws in zip(segment_lists, weight_lists):
            for s, w in zip(segs, ws):
                counts[s][int(w)] += 1
                all_levels[int(w)] += 1
        self.prior = {s: c.most_common(1)[0][0] for s, c in counts.items()}
        self.default_level = all_levels.most_common(1)[0][0] if all_levels else 1
        X, y = [], []
        for segs, ws in zip(segment_lists, weight_lists):
            for i, w in enumerate(ws):
                X.append(self._features(segs, i))
                y.append(int(w))
        self.vec, self.clf = None, None
        if len(set(y)) >= 2:
            self.vec = DictVectorizer()
            self.clf = LogisticRegression(C=self.C, max_iter=2000)
            self.clf.fit(self.vec.fit_transform(X), y)
        logger.info("term weighter: %d segments, %d words in prior", len(y), len(self.prior))
        return self

    def predict_many(self, segment_lists: list[list[str]]) -> list[list[int]]:
        rows = [(k, i) for k, segs in enumerate(segment_lists) for i in range(len(segs))]
        out = [[self.default_level] * len(segs) for segs in segment_lists]
        if not rows or self.clf is None:
            return out
        X = self.vec.transform([self._features(segment_lists[k], i) for k, i in rows])
        for (k, i), level in zip(rows, self.clf.predict(X)):
            out[k][i] = max(0, min(MAX_WEIGHT, int(level)))
        return out
