"""Word segmentation: jieba with a lexicon learned from the training segments.

The lexicon is how an isolated legacy segmenter follows the annotation convention: every word annotators
cut out (entities whole, brand and series apart, slang whole) is added to jieba with a frequency high
enough to win over jieba's own dictionary. Whitespace in the query is a hard boundary (the rules say a
space never belongs to a word), so each whitespace-separated chunk is cut on its own.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable

from qp_core.normalize import compact, normalize_query

logger = logging.getLogger(__name__)

LEXICON_BASE_FREQ = 100_000  # jieba's biggest dictionary frequencies are in the low millions


def _quiet_jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


class Segmenter:
    """``fit(segment_lists)`` learns the lexicon; ``cut(query)`` returns segments tiling ``compact(query)``."""

    def __init__(self, min_count: int = 1, use_base_dict: bool = True):
        self.min_count = min_count
        self.use_base_dict = use_base_dict
        self.lexicon: dict[str, int] = {}
        self._tk = None

    # -- training
    def fit(self, segment_lists: Iterable[list[str]]) -> "Segmenter":
        counts: Counter[str] = Counter()
        for segs in segment_lists:
            for s in segs:
                w = compact(s)
                if w:
                    counts[w] += 1
        self.lexicon = {w: n for w, n in counts.items() if n >= self.min_count}
        self._tk = None
        logger.info("segmenter lexicon: %d words", len(self.lexicon))
        return self

    # -- inference
    def _tokenizer(self):
        if self._tk is None:
            jieba = _quiet_jieba()
            tk = jieba.Tokenizer()
            if self.use_base_dict:
                tk.initialize()
            else:  # only the learned lexicon: drop jieba's dictionary after loading it
                tk.initialize()
                tk.FREQ, tk.total = {}, 0
            for w, n in self.lexicon.items():
                if " " not in w:
                    tk.add_word(w, LEXICON_BASE_FREQ + n)
            self._tk = tk
        return self._tk

    def cut(self, query: str) -> list[str]:
        tk = self._tokenizer()
        out: list[str] = []
        for chunk in normalize_query(query).split(" "):
            if not chunk:
                continue
            pieces = [p for p in tk.cut(chunk, HMM=True) if p and not p.isspace()]
            if "".join(pieces) != chunk:  # never happens with jieba, but the contract must hold
                pieces = [chunk]
            out.extend(pieces)
        return out

    def __getstate__(self):
        return {"min_count": self.min_count, "use_base_dict": self.use_base_dict, "lexicon": self.lexicon}

    def __setstate__(self, state):
        self.__init__(state["min_count"], state["use_base_dict"])
        self.lexicon = state["lexicon"]
