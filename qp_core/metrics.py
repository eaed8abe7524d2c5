"""Evaluation metrics of the paper (§5.1.2, DESIGN §3), one code path for reports and GRPO rewards.

Every sub-task is reduced to a *set of units per query*; precision/recall/F1 count units.

* NER       — (start, end, type) of each entity, spans over ``compact(query)`` via ``schema.entity_spans``;
              a predicted entity that cannot be placed (not in the query, or out of order: it only occurs
              before the previous entity) is a unit that matches nothing, i.e. a false positive;
* Seg       — (start, end, text) of each segment, cumulative lengths via ``schema.segment_spans`` and the
              segment's normalised text, so a segment with the right length but the wrong characters
              (a prediction that does not tile the query) is a false positive, not a hit;
* TW        — (start, end, text, weight): a weight only counts on a correct term (joint F1);
* Taxonomy  — ½ (top-1 accuracy + F1 over (query, label) units);
* Overall   — mean of the four scores above.

Corpus scores are micro-averaged (units summed over all queries) and reported 0–100.
``sample_scores`` gives the same quantities for one query, 0–1: GRPO rewards call it, so a reward
equals the corpus metric evaluated on that single sample.

Conventions (the paper leaves them open):
* F1 when there is nothing to find and nothing was predicted (tp = fp = fn = 0) is perfect (1.0 / 100):
  e.g. a query without entities and a prediction without entities. Where precision (nothing predicted)
  or recall (nothing to find) is undefined it takes the F1 value: 1.0 only if tp = fp = fn = 0, else 0.
* Top-1 accuracy compares ``category[0]``; if both category lists are empty it counts as correct.
* Units come from the prediction as given: a prediction whose segments do not tile the query still yields
  cumulative-offset units carrying their text (the parser never lets such an output through; hand-built
  predictions and the GRPO rewards of free rollouts can).
* Unplaceable entities are counted per entity (two unplaceable entities are two false positives); the
  same rule applies to a reference, where such an entity is a miss that no prediction can match.
* Units are sets: a duplicated unit counts once. (query, label) units are counted per sample index,
  so the same query text appearing twice in an evaluation set counts twice.
* The intent description is scored separately by chrF (sacrebleu, character n-grams up to 6,
  whitespace ignored): corpus-level in ``evaluate``, sentence-level in ``sample_scores`` (for one
  sample the two agree). sacrebleu scores an empty hypothesis, or an empty reference, as 0.
* Breakdowns (``ner_by_type``, ``tw_by_weight``) list only the types/levels that occur in predictions
  or references, so that no row shows a vacuous 100.
* ``valid_rate`` is a fraction 0–1 (the share of predictions that are not None), unlike the scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from qp_core.normalize import compact
from qp_core.schema import QPResult, entity_spans, segment_spans

TASKS = ("ner", "seg", "tw", "taxonomy", "intent")
SCORED_TASKS = ("ner", "seg", "tw", "taxonomy")  # the four averaged into "overall"


@dataclass
class Counts:
    """True positives, false positives, false negatives of one unit kind."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred: set, ref: set) -> None:
        inter = len(pred & ref)
        self.tp += inter
        self.fp += len(pred) - inter
        self.fn += len(ref) - inter

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else self.f1

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else self.f1

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0

    def report(self) -> dict[str, float | int]:
        return {
            "precision": 100 * self.precision,
            "recall": 100 * self.recall,
            "f1": 100 * self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "support": self.tp + self.fn,
        }


# ---------------------------------------------------------------- units of one sample


def _as_dict(obj: Any) -> dict[str, Any]:
    """A prediction/reference as a plain dict; None and non-dicts count as empty."""
    if isinstance(obj, QPResult):
        return obj.model_dump()
    return obj if isinstance(obj, dict) else {}


def _list(d: dict[str, Any], key: str) -> list:
    value = d.get(key)
    return value if isinstance(value, list) else []


class Unplaced(tuple):
    """NER unit of an entity that cannot be placed in the query: ``(None, index, type)``.

    A distinct class so that a prediction's unplaced entity never equals a reference's (both would be
    ``(None, i, type)``): tuples of different classes with equal items still compare equal, so equality
    is overridden to identity.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def ner_units(result: dict[str, Any], query: str) -> set[tuple]:
    """(start, end, type) per placed entity; an ``Unplaced`` unit (never matching) per unplaceable one."""
    ents = [e for e in _list(result, "entities") if isinstance(e, dict)]
    units: set[tuple] = set()
    for i, (ent, span) in enumerate(zip(ents, entity_spans(ents, query))):
        if span is not None and span[1] > span[0]:
            units.add(span)
        else:
            units.add(Unplaced((None, i, str(ent.get("type")))))
    return units


def seg_units(result: dict[str, Any]) -> set[tuple[int, int, str]]:
    segs = _list(result, "segments")
    return {(s, e, compact(t)) for (s, e), t in zip(segment_spans(segs), segs) if e > s}


def tw_units(result: dict[str, Any]) -> set[tuple[int, int, str, int]]:
    segs, weights = _list(result, "segments"), _list(result, "weights")
    return {
        (s, e, compact(t), w)
        for (s, e), t, w in zip(segment_spans(segs), segs, weights)
        if e > s and isinstance(w, int) and not isinstance(w, bool)
    }


def category_labels(result: dict[str, Any]) -> list[str]:
    return [c for c in _list(result, "category") if isinstance(c, str)]


def top1_correct(pred: dict[str, Any], ref: dict[str, Any]) -> bool:
    p, r = category_labels(pred), category_labels(ref)
    return (p[:1] == r[:1]) if (p or r) else True


def _intent(result: dict[str, Any]) -> str:
    text = result.get("intent_desc")
    return text if isinstance(text, str) else ""


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF  # imported lazily: only evaluation needs it

    return CHRF()


def intent_chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (0–100) of intent descriptions; 0 when nothing can be scored."""
    if not hyps:
        return 0.0
    return float(_chrf().corpus_score(list(hyps), [list(refs)]).score)


def _query_of(ref: dict[str, Any], query: str | None) -> str:
    q = query if query is not None else ref.get("query")
    if not isinstance(q, str):
        raise ValueError("reference has no 'query' (pass query= or include it in the reference dict)")
    return q


def sample_counts(pred: Any, ref: Any, query: str | None = None) -> dict[str, Counts]:
    """Per-task unit counts of one sample (``ner``, ``seg``, ``tw``, ``taxonomy`` label pairs)."""
    p, r = _as_dict(pred), _as_dict(ref)
    q = _query_of(r, query)
    counts = {k: Counts() for k in SCORED_TASKS}
    counts["ner"].add(ner_units(p, q), ner_units(r, q))
    counts["seg"].add(seg_units(p), seg_units(r))
    counts["tw"].add(tw_units(p), tw_units(r))
    counts["taxonomy"].add(set(category_labels(p)), set(category_labels(r)))
    return counts


def sample_scores(pred: Any, ref: Any, query: str | None = None) -> dict[str, float]:
    """Per-sample scores 0–1 for each task of ``TASKS``: the metric of ``evaluate`` on this one sample.

    ``pred`` may be None (counts as empty). ``query`` defaults to ``ref["query"]``.
    """
    p, r = _as_dict(pred), _as_dict(ref)
    counts = sample_counts(p, r, query)
    chrf = _chrf().sentence_score(_intent(p), [_intent(r)]).score / 100.0
    return {
        "ner": counts["ner"].f1,
        "seg": counts["seg"].f1,
        "tw": counts["tw"].f1,
        "taxonomy": 0.5 * (float(top1_correct(p, r)) + counts["taxonomy"].f1),
        "intent": chrf,
    }


# ---------------------------------------------------------------- corpus


def evaluate(predictions: Sequence[Any], references: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Corpus metrics of ``predictions`` against ``references`` (aligned by index).

    References are unified dicts with a ``query`` key; predictions are unified dicts (or ``QPResult``)
    or None for an unparseable output, which counts as an empty prediction.

    Returns ``ner_f1, seg_f1, tw_f1, taxonomy, overall`` (0–100), ``taxonomy_top1``, ``taxonomy_f1``,
    ``intent_chrf`` (0–100), ``valid_rate`` (fraction 0–1), ``n``, and breakdowns: ``detail``
    (precision/recall/F1 and counts per task), ``ner_by_type`` and ``tw_by_weight`` (per entity type /
    weight level: precision, recall, F1, support).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    totals = {k: Counts() for k in SCORED_TASKS}
    by_type: dict[str, Counts] = {}
    by_weight: dict[int, Counts] = {}
    top1 = valid = 0
    hyps, refs = [], []
    for pred, ref in zip(predictions, references):
        p, r = _as_dict(pred), _as_dict(ref)
        q = _query_of(r, None)
        valid += pred is not None
        pn, rn = ner_units(p, q), ner_units(r, q)
        totals["ner"].add(pn, rn)
        for etype in {u[2] for u in pn | rn}:
            by_type.setdefault(etype, Counts()).add({u for u in pn if u[2] == etype}, {u for u in rn if u[2] == etype})
        totals["seg"].add(seg_units(p), seg_units(r))
        pt, rt = tw_units(p), tw_units(r)
        totals["tw"].add(pt, rt)
        for w in {u[3] for u in pt | rt}:
            by_weight.setdefault(w, Counts()).add({u for u in pt if u[3] == w}, {u for u in rt if u[3] == w})
        totals["taxonomy"].add(set(category_labels(p)), set(category_labels(r)))
        top1 += top1_correct(p, r)
        hyps.append(_intent(p))
        refs.append(_intent(r))
    n = len(references)
    top1_acc = 100.0 * top1 / n if n else 0.0
    out: dict[str, Any] = {
        "ner_f1": 100 * totals["ner"].f1,
        "seg_f1": 100 * totals["seg"].f1,
        "tw_f1": 100 * totals["tw"].f1,
        "taxonomy": 0.5 * (top1_acc + 100 * totals["taxonomy"].f1) if n else 0.0,
        "taxonomy_top1": top1_acc,
        "taxonomy_f1": 100 * totals["taxonomy"].f1,
    }
    if not n:  # nothing evaluated: report zeros rather than vacuous perfection
        out.update(ner_f1=0.0, seg_f1=0.0, tw_f1=0.0, taxonomy_f1=0.0)
    out["overall"] = (out["ner_f1"] + out["seg_f1"] + out["tw_f1"] + out["taxonomy"]) / 4
    out["intent_chrf"] = intent_chrf(hyps, refs)
    out["valid_rate"] = valid / n if n else 0.0
    out["n"] = n
    out["detail"] = {k: c.report() for k, c in totals.items()}
    out["ner_by_type"] = {t: by_type[t].report() for t in sorted(by_type)}
    out["tw_by_weight"] = {str(w): by_weight[w].report() for w in sorted(by_weight)}
    return out


# ---------------------------------------------------------------- per-row counts (paired bootstrap)

ROW_COLUMNS = ("ner_tp", "ner_fp", "ner_fn", "seg_tp", "seg_fp", "seg_fn", "tw_tp", "tw_fp", "tw_fn",
               "tax_tp", "tax_fp", "tax_fn", "top1")


def row_counts(predictions: Sequence[Any], references: Sequence[dict[str, Any]]) -> list[list[int]]:
    """One row of ``ROW_COLUMNS`` per sample: the unit counts ``evaluate`` sums, kept per query so that a
    resample of queries (``qp_core.training.compare``) can recompute the corpus scores exactly."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    out = []
    for pred, ref in zip(predictions, references):
        p, r = _as_dict(pred), _as_dict(ref)
        c = sample_counts(p, r)
        row = []
        for task in SCORED_TASKS:
            row += [c[task].tp, c[task].fp, c[task].fn]
        out.append(row + [int(top1_correct(p, r))])
    return out
