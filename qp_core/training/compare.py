"""Comparisons the report and the promotion gate make: paired-bootstrap 95% intervals, slices, traffic weighting.

Why: on 2,500 golden rows the standard error of Overall is ~0.5 points and of NER ~1.5, so a fixed
threshold ("±0.05 points helps") reads noise as a verdict. Two systems answer the same queries, so their
difference is resampled *paired*: each bootstrap draw picks queries with replacement and recomputes both
systems' micro-averaged corpus scores on that draw from per-query unit counts (``metrics.row_counts``),
exactly as ``metrics.evaluate`` computes them. A verdict ("better"/"worse") is given only where the 95%
interval of the difference excludes zero.

Slices (disjoint, in this order): ``ambiguous`` — the reference segments contain a word whose sense
depends on the context (``world.lexicon.AMBIGUOUS``); ``new_word`` — a reference segment that the legacy
snapshot's annotations never contain (a word first seen after the snapshot); ``rest``. ``traffic`` is
the Overall re-weighted to the slices' shares of live traffic (``slice_shares`` of a traffic sample),
since the golden set over-represents the hard slices on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qp_core.metrics import ROW_COLUMNS

KEYS = ("overall", "ner_f1", "seg_f1", "tw_f1", "taxonomy")
SLICES = ("ambiguous", "new_word", "rest")
TRAFFIC = "traffic"


# --------------------------------------------------------------------------------- scores from counts


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def scores_from_sums(sums: np.ndarray, n: np.ndarray | float) -> dict[str, np.ndarray]:
    """Corpus scores (0–100) from summed ``ROW_COLUMNS`` counts (last axis), as ``metrics.evaluate``."""
    s = np.asarray(sums, dtype=float)
    ner, seg, tw, tax = (_f1(s[..., i], s[..., i + 1], s[..., i + 2]) for i in (0, 3, 6, 9))
    top1 = s[..., 12] / np.maximum(n, 1)
    out = {"ner_f1": 100 * ner, "seg_f1": 100 * seg, "tw_f1": 100 * tw, "taxonomy": 50 * (top1 + tax)}
    out["overall"] = (out["ner_f1"] + out["seg_f1"] + out["tw_f1"] + out["taxonomy"]) / 4
    return out


def _as_counts(counts: Sequence[Sequence[int]]) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != len(ROW_COLUMNS):
        raise ValueError(f"per-row counts must be (n, {len(ROW_COLUMNS)}), got {arr.shape}")
    return arr


def point_scores(counts: Sequence[Sequence[int]], mask: np.ndarray | None = None) -> dict[str, float]:
    c = _as_counts(counts)
    if mask is not None:
        c = c[np.asarray(mask, dtype=bool)]
    return {k: float(v) for k, v in scores_from_sums(c.sum(axis=0), len(c)).items()}


# -------------------------------------------------------------------------------------------- slices


def snapshot_vocabulary(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Normalised segment texts of the annotation rows the legacy snapshot was fitted on."""
    from qp_core.normalize import compact

    vocab: set[str] = set()
    for r in rows:
        vocab.update(compact(s) for s in _segments(r) if compact(s))
    return vocab


def _segments(row: Mapping[str, Any]) -> list[str]:
    label = row.get("label")
    if isinstance(label, str):
        try:
            label = json.loads(label)
        except ValueError:
            return []
    segs = label.get("segments") if isinstance(label, dict) else None
    return [s for s in segs if isinstance(s, str)] if isinstance(segs, list) else []


def slice_of(row: Mapping[str, Any], vocab: set[str]) -> str:
    from qp_core.normalize import compact
    from qp_core.world.lexicon import AMBIGUOUS

    segs = [compact(s) for s in _segments(row)]
    if any(s in AMBIGUOUS for s in segs):
        return "ambiguous"
    if any(s and s not in vocab for s in segs):
        return "new_word"
    return "rest"


def slice_masks(rows: Sequence[Mapping[str, Any]], vocab: set[str]) -> dict[str, np.ndarray]:
    names = np.array([slice_of(r, vocab) for r in rows])
    return {s: names == s for s in SLICES}


def slice_shares(rows: Sequence[Mapping[str, Any]], vocab: set[str]) -> dict[str, float]:
    """Each slice's share of ``rows`` (a traffic sample): the weights of the traffic-weighted Overall."""
    masks = slice_masks(rows, vocab)
    n = max(1, len(rows))
    return {s: float(m.sum()) / n for s, m in masks.items()}


def slice_scores(counts: Sequence[Sequence[int]], masks: Mapping[str, np.ndarray],
                 shares: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Overall (and sub-tasks) per slice, the slice sizes, and the traffic-weighted Overall."""
    out: dict[str, Any] = {}
    for s, m in masks.items():
        out[s] = {**point_scores(counts, m), "n": int(np.asarray(m).sum())} if np.asarray(m).any() else {"n": 0}
    if shares:
        out[TRAFFIC] = _traffic(out, shares)
    return out


def _traffic(per_slice: Mapping[str, Any], shares: Mapping[str, float]) -> float | None:
    present = {s: w for s, w in shares.items() if per_slice.get(s, {}).get("n")}
    total = sum(present.values())
    if total <= 0:
        return None
    return sum(w * per_slice[s]["overall"] for s, w in present.items()) / total


# ------------------------------------------------------------------------------------ paired bootstrap


def paired_bootstrap(
    a: Sequence[Sequence[int]],
    b: Sequence[Sequence[int]],
    *,
    masks: Mapping[str, np.ndarray] | None = None,
    shares: Mapping[str, float] | None = None,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Difference a − b with its paired-bootstrap interval for every key of ``KEYS`` on all rows, for
    Overall on each slice of ``masks``, and for the traffic-weighted Overall when ``shares`` is given.

    Returns ``{"all": {key: {"diff", "lo", "hi", "verdict"}}, "<slice>": {...}, "traffic": {...}}``.
    """
    ca, cb = _as_counts(a), _as_counts(b)
    if ca.shape != cb.shape:
        raise ValueError(f"paired comparison needs the same rows: {ca.shape} vs {cb.shape}")
    n = len(ca)
    if n == 0:
        raise ValueError("paired comparison of zero rows")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=draws)  # (draws, n): how often each row is drawn
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def interval(point: float, sample: np.ndarray) -> dict[str, Any]:
        lo, hi = (float(x) for x in np.nanpercentile(sample, q))
        return {"diff": point, "lo": lo, "hi": hi, "verdict": verdict(lo, hi)}

    def boot(mask: np.ndarray | None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        w = weights if mask is None else weights[:, mask]
        xa, xb = (ca, cb) if mask is None else (ca[mask], cb[mask])
        m = w.sum(axis=1)
        sa, sb = scores_from_sums(w @ xa, m), scores_from_sums(w @ xb, m)
        pa, pb = scores_from_sums(xa.sum(0), len(xa)), scores_from_sums(xb.sum(0), len(xb))
        # a draw that picked no row of a small slice says nothing about it (both sides would score a
        # vacuous 100): it is left out of that slice's interval
        empty = m == 0
        return ({k: float(pa[k] - pb[k]) for k in KEYS},
                {k: np.where(empty, np.nan, sa[k] - sb[k]) for k in KEYS})

    point, sample = boot(None)
    out: dict[str, Any] = {"all": {k: interval(point[k], sample[k]) for k in KEYS}, "n": n,
                           "draws": draws, "level": level}
    slice_samples: dict[str, tuple[float, np.ndarray, float, np.ndarray]] = {}
    for s, m in (masks or {}).items():
        m = np.asarray(m, dtype=bool)
        if not m.any():
            continue
        p, smp = boot(m)
        out[s] = {"overall": interval(p["overall"], smp["overall"]), "n": int(m.sum())}
        slice_samples[s] = (p["overall"], smp["overall"], shares.get(s, 0.0) if shares else 0.0, m)
    if shares and slice_samples:
        total = sum(w for _, _, w, _ in slice_samples.values())
        if total > 0:
            p = sum(w * pt for pt, _, w, _ in slice_samples.values()) / total
            smp = sum(w * sm for _, sm, w, _ in slice_samples.values()) / total
            out[TRAFFIC] = {"overall": interval(float(p), smp)}
    return out


def verdict(lo: float, hi: float) -> str:
    """"better" / "worse" only where the interval excludes zero."""
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "no clear difference"


def fmt_interval(d: Mapping[str, Any]) -> str:
    return f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] {d['verdict']}"
