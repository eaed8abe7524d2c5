"""Query taxonomy: TF-IDF over character n-grams + one-vs-rest logistic regression.

Labels are ranked by probability; those above a threshold are kept (at least one, at most
``MAX_CATEGORIES``). The threshold is tuned for micro-F1 on a held-out slice of the training data.
The model sees the query alone, so ambiguous words (苹果: phone or fruit) get their most common sense —
the gap the unified model closes with history and notes.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from qp_core.normalize import normalize_query
from qp_core.schema import MAX_CATEGORIES, taxonomy_labels

logger = logging.getLogger(__name__)


class TaxonomyClassifier:
    def __init__(self, C: float = 8.0, threshold: float | None = None, ngram_range: tuple[int, int] = (1, 3)):
        self.C = C
        self.threshold = threshold
        self.ngram_range = ngram_range
        self.labels: list[str] = []
        self.majority = taxonomy_labels()[0]
        self.vec = None
        self.clf = None

    def _fit_once(self, queries: list[str], label_lists: list[list[str]]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, sublinear_tf=True, min_df=1)
        X = vec.fit_transform([normalize_query(q) for q in queries])
        Y = np.array([[1 if lab in labs else 0 for lab in self.labels] for labs in label_lists])
        clf = OneVsRestClassifier(LogisticRegression(C=self.C, max_iter=2000))
        clf.fit(X, Y)
        return vec, clf

    def fit(self, queries: list[str], label_lists: list[list[str]]) -> "TaxonomyClassifier":
        allowed = set(taxonomy_labels())
        label_lists = [[lab for lab in labs if lab in allowed] for labs in label_lists]
        counts = Counter(lab for labs in label_lists for lab in labs)
        top1 = Counter(labs[0] for labs in label_lists if labs)
        self.labels = sorted(counts)
        if top1:
            self.majority = top1.most_common(1)[0][0]
        self.vec = self.clf = None
        if len(self.labels) < 2:
            return self
        if self.threshold is None:
            self.threshold = self._tune_threshold(queries, label_lists)
        self.vec, self.clf = self._fit_once(queries, label_lists)
        logger.info("taxonomy: %d labels, threshold %.2f", len(self.labels), self.threshold)
        return self

    def _tune_threshold(self, queries, label_lists) -> float:
        n = len(queries)
        if n < 50:
            return 0.5
        rng = np.random.default_rng(0)
        dev = set(rng.choice(n, size=max(10, n // 5), replace=False).tolist())
        tr = [i for i in range(n) if i not in dev]
        sets = [set(label_lists[i]) for i in tr]
        if any(sum(lab in s for s in sets) == 0 for lab in self.labels):
            return 0.5  # a label absent from the split: keep the default rather than a skewed fit
        vec, clf = self._fit_once([queries[i] for i in tr], [label_lists[i] for i in tr])
        dev_idx = sorted(dev)
        proba = clf.predict_proba(vec.transform([normalize_query(queries[i]) for i in dev_idx]))
        best, best_f1 = 0.5, -1.0
        for th in np.arange(0.1, 0.75, 0.05):
            tp = fp = fn = 0
            for row, i in zip(proba, dev_idx):
                pred = set(self._rank(row, th))
                gold = set(label_lists[i])
                tp += len(pred & gold)
                fp += len(pred - gold)
                fn += len(gold - pred)
            f1 = 2 * tp / max(1, 2 * tp + fp + fn)
            if f1 > best_f1 + 1e-9:
                best, best_f1 = float(th), f1
        return round(best, 2)

    def _rank(self, row, threshold: float) -> list[str]:
        order = np.argsort(-row, kind="stable")
        keep = [self.labels[j] for j in order[:MAX_CATEGORIES] if row[j] >= threshold]
        return keep or [self.labels[int(order[0])]]

    def predict_many(self, queries: list[str]) -> list[list[str]]:
        if self.clf is None:
            return [[self.labels[0] if self.labels else self.majority] for _ in queries]
        if not queries:
            return []
        proba = self.clf.predict_proba(self.vec.transform([normalize_query(q) for q in queries]))
        return [self._rank(row, self.threshold) for row in proba]
