"""Metrics against hand-computed values (paper §5.1.2 / DESIGN §3)."""

from __future__ import annotations

import pytest
from sacrebleu.metrics import CHRF

from qp_core.metrics import Counts, evaluate, sample_counts, sample_scores
from qp_core.schema import QPResult

# compact(Q1) = "雅诗兰黛1c1粉底液色号": 雅诗兰黛 [0,4) 1c1 [4,7) 粉底液 [7,10) 色号 [10,12)
Q1 = "雅诗兰黛 1C1 粉底液 色号"
# compact(Q2) = "dior口红dior香水": dior [0,4) 口红 [4,6) dior [6,10) 香水 [10,12)
Q2 = "Dior 口红 dior 香水"


def out(entities=(), segments=(), weights=(), category=(), intent="意图", query=None):
    d = {
        "entities": [{"text": t, "type": ty} for t, ty in entities],
        "segments": list(segments),
        "weights": list(weights),
        "category": list(category),
        "intent_desc": intent,
    }
    if query is not None:
        d["query"] = query
    return d


REF1 = out(
    [("雅诗兰黛", "brand"), ("1c1", "product_series")],
    ["雅诗兰黛", "1c1", "粉底液", "色号"],
    [3, 3, 2, 1],
    ["美妆/彩妆", "美妆/护肤"],
    "用户在挑选雅诗兰黛粉底液",
    query=Q1,
)
REF2 = out(
    [("dior", "brand"), ("口红", "product_type"), ("dior", "brand"), ("香水", "product_type")],
    ["dior", "口红", "dior", "香水"],
    [3, 2, 3, 2],
    ["美妆/彩妆"],
    "比较迪奥口红和香水",
    query=Q2,
)


def test_perfect_prediction_scores_100_everywhere():
    pred = {k: v for k, v in REF1.items() if k != "query"}
    m = evaluate([pred, REF2], [REF1, REF2])
    for key in ("ner_f1", "seg_f1", "tw_f1", "taxonomy", "overall", "taxonomy_top1", "taxonomy_f1", "intent_chrf"):
        assert m[key] == pytest.approx(100.0), key
    assert m["valid_rate"] == 1.0 and m["n"] == 2


def test_none_prediction_counts_as_empty():
    m = evaluate([None], [REF1])
    assert m["ner_f1"] == m["seg_f1"] == m["tw_f1"] == m["taxonomy"] == m["overall"] == 0.0
    assert m["intent_chrf"] == 0.0 and m["valid_rate"] == 0.0
    assert m["detail"]["ner"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2, "support": 2}
    assert evaluate([out()], [REF1])["overall"] == 0.0  # an explicit empty result is the same


def test_repeated_substring_entities_are_placed_left_to_right():
    # both "dior" occurrences: the 2nd entity "dior" is searched after "口红" -> span [6,10)
    c = sample_counts(out([("口红", "product_type"), ("dior", "brand")]), REF2)["ner"]
    assert (c.tp, c.fp, c.fn) == (2, 0, 2)
    # listing "dior" once matches the FIRST occurrence only
    c = sample_counts(out([("dior", "brand"), ("香水", "product_type")]), REF2)["ner"]
    assert (c.tp, c.fp, c.fn) == (2, 0, 2)
    # a third "dior" cannot be placed: it is a false positive
    c = sample_counts(out([("dior", "brand")] * 3), REF2)["ner"]
    assert (c.tp, c.fp, c.fn) == (2, 1, 2)
    assert evaluate([out([("dior", "brand")] * 3)], [REF2])["detail"]["ner"]["precision"] == pytest.approx(100 * 2 / 3)
    assert evaluate([out([("dior", "brand")] * 3)], [REF2])["ner_f1"] == pytest.approx(100 * 2 * 2 / (4 + 1 + 2))


def test_unplaceable_and_out_of_order_entities_are_false_positives():
    # not in the query at all: 1 fp (the correct 雅诗兰黛 still counts)
    c = sample_counts(out([("雅诗兰黛", "brand"), ("兰蔻", "brand")]), REF1)["ner"]
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    # out of order: 1c1 [4,7) listed first is placed; 雅诗兰黛 only occurs before it -> unplaceable, fp
    c = sample_counts(out([("1c1", "product_series"), ("雅诗兰黛", "brand")]), REF1)["ner"]
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    # two unplaceable entities of the same type are two false positives, and an empty text is one too
    c = sample_counts(out([("兰蔻", "brand"), ("兰蔻", "brand"), ("", "brand")]), REF1)["ner"]
    assert (c.tp, c.fp, c.fn) == (0, 3, 2)
    m = evaluate([out([("雅诗兰黛", "brand"), ("兰蔻", "brand")])], [REF1])
    assert m["ner_f1"] == pytest.approx(100 * 2 / (2 + 1 + 1))
    assert m["ner_by_type"]["brand"]["fp"] == 1 and m["ner_by_type"]["brand"]["tp"] == 1
    # an unplaceable reference entity is a miss that an equally unplaceable prediction does not match
    ref = dict(REF1, entities=[{"text": "兰蔻", "type": "brand"}])
    c = sample_counts(out([("兰蔻", "brand")]), ref)["ner"]
    assert (c.tp, c.fp, c.fn) == (0, 1, 1)


def test_segments_are_compared_by_text_as_well_as_boundaries():
    # right lengths, wrong characters in the 3rd segment (does not tile the query): fp + fn for Seg and TW
    pred = out(segments=["雅诗兰黛", "1c1", "粉底霜", "色号"], weights=[3, 3, 2, 1])
    c = sample_counts(pred, REF1)
    assert (c["seg"].tp, c["seg"].fp, c["seg"].fn) == (3, 1, 1)
    assert (c["tw"].tp, c["tw"].fp, c["tw"].fn) == (3, 1, 1)
    assert sample_scores(pred, REF1)["seg"] == pytest.approx(6 / 8)
    # normalisation (case, whitespace) is not a text difference
    pred = out(segments=["雅诗 兰黛", "1C1", "粉底液", "色号"], weights=[3, 3, 2, 1])
    c = sample_counts(pred, REF1)
    assert (c["seg"].tp, c["seg"].fp, c["seg"].fn) == (4, 0, 0)


def test_ner_is_strict_on_type_and_boundary():
    wrong_type = out([("雅诗兰黛", "person"), ("1c1", "product_series")])
    c = sample_counts(wrong_type, REF1)["ner"]
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    short = out([("雅诗兰", "brand"), ("1c1", "product_series")])  # boundary off by one
    c = sample_counts(short, REF1)["ner"]
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    # whitespace and case inside entity text are normalised away before matching
    c = sample_counts(out([("雅诗 兰黛", "brand"), ("1C1", "product_series")]), REF1)["ner"]
    assert (c.tp, c.fp, c.fn) == (2, 0, 0)
    m = evaluate([wrong_type], [REF1])
    assert m["ner_f1"] == pytest.approx(50.0)
    assert m["ner_by_type"]["brand"]["f1"] == 0.0 and m["ner_by_type"]["brand"]["support"] == 1
    assert m["ner_by_type"]["person"]["precision"] == 0.0 and m["ner_by_type"]["person"]["support"] == 0
    assert m["ner_by_type"]["product_series"]["f1"] == 100.0


def test_missing_segments_merged_segment_and_weights():
    # 粉底液色号 merged: units (0,4) (4,7) (7,12) vs (0,4) (4,7) (7,10) (10,12)
    pred = out(segments=["雅诗兰黛", "1c1", "粉底液色号"], weights=[3, 2, 2])
    c = sample_counts(pred, REF1)
    assert (c["seg"].tp, c["seg"].fp, c["seg"].fn) == (2, 1, 2)
    assert c["seg"].f1 == pytest.approx(4 / 7)
    # joint TW: only (0,4,3) matches -- (4,7,2) has the wrong weight, (7,12,2) the wrong boundary
    assert (c["tw"].tp, c["tw"].fp, c["tw"].fn) == (1, 2, 3)
    assert c["tw"].f1 == pytest.approx(2 / 7)
    m = evaluate([pred], [REF1])
    assert m["seg_f1"] == pytest.approx(100 * 4 / 7) and m["tw_f1"] == pytest.approx(100 * 2 / 7)
    assert m["tw_by_weight"]["3"]["tp"] == 1 and m["tw_by_weight"]["3"]["fn"] == 1  # (4,7,3) missed
    assert m["tw_by_weight"]["2"]["fp"] == 2 and m["tw_by_weight"]["2"]["fn"] == 1
    assert m["tw_by_weight"]["1"]["f1"] == 0.0 and m["tw_by_weight"]["1"]["support"] == 1
    assert "0" not in m["tw_by_weight"]  # levels that occur nowhere are not listed


def test_extra_segments_and_a_list_that_does_not_tile_the_query():
    split = out(segments=["雅诗", "兰黛", "1c1", "粉底液", "色号"], weights=[3, 3, 3, 2, 1])
    c = sample_counts(split, REF1)
    assert (c["seg"].tp, c["seg"].fp, c["seg"].fn) == (3, 2, 1)
    assert c["seg"].f1 == pytest.approx(6 / 9)
    assert (c["tw"].tp, c["tw"].fp, c["tw"].fn) == (3, 2, 1)
    # stops early: the prefix segments still count
    c = sample_counts(out(segments=["雅诗兰黛", "1c1"], weights=[3, 3]), REF1)
    assert (c["seg"].tp, c["seg"].fp, c["seg"].fn) == (2, 0, 2)
    # skips the first term: offsets are cumulative, so everything shifts and nothing matches
    c = sample_counts(out(segments=["1c1", "粉底液", "色号"], weights=[3, 2, 1]), REF1)
    assert (c["seg"].tp, c["seg"].fp, c["seg"].fn) == (0, 3, 4)
    # more weights than segments: extra weights are ignored; fewer: unweighted segments yield no TW unit
    c = sample_counts(out(segments=REF1["segments"], weights=[3, 3]), REF1)
    assert (c["tw"].tp, c["tw"].fp, c["tw"].fn) == (2, 0, 2)
    c = sample_counts(out(segments=REF1["segments"], weights=[3, 3, 2, 1, 0, 0]), REF1)
    assert (c["tw"].tp, c["tw"].fp, c["tw"].fn) == (4, 0, 0)


def test_taxonomy_top1_is_order_sensitive_f1_is_not():
    swapped = out(category=["美妆/护肤", "美妆/彩妆"])
    s = sample_scores(swapped, REF1)
    assert s["taxonomy"] == pytest.approx(0.5 * (0 + 1))
    first_only = out(category=["美妆/彩妆"])
    s = sample_scores(first_only, REF1)
    assert s["taxonomy"] == pytest.approx(0.5 * (1 + 2 / 3))
    # corpus: top-1 accuracy over samples, F1 micro over (query, label) pairs
    m = evaluate([swapped, out(category=["美妆/彩妆", "数码/手机"])], [REF1, REF2])
    # sample 1: tp 2; sample 2: tp 1, fp 1 -> micro F1 = 6 / (6 + 1 + 0); top-1 = 1/2
    assert m["taxonomy_top1"] == pytest.approx(50.0)
    assert m["taxonomy_f1"] == pytest.approx(100 * 6 / 7)
    assert m["taxonomy"] == pytest.approx(0.5 * (50 + 100 * 6 / 7))


def test_micro_average_pools_units_across_queries():
    p1 = {k: v for k, v in REF1.items() if k != "query"}  # NER tp 2
    p2 = out([("dior", "person")])  # NER tp 0, fp 1, fn 4
    m = evaluate([p1, p2], [REF1, REF2])
    assert m["ner_f1"] == pytest.approx(100 * 4 / (4 + 1 + 4))  # not the macro mean (100 + 0) / 2
    assert m["overall"] == pytest.approx((m["ner_f1"] + m["seg_f1"] + m["tw_f1"] + m["taxonomy"]) / 4)


def test_empty_reference_sets():
    ref = out([], ["好看", "的", "衣服"], [2, 0, 3], ["时尚/穿搭"], query="好看的衣服")
    none_found = out([], ["好看", "的", "衣服"], [2, 0, 3], ["时尚/穿搭"])
    # nothing to find and nothing predicted: F1 is perfect by convention
    assert sample_scores(none_found, ref)["ner"] == 1.0
    assert evaluate([none_found], [ref])["ner_f1"] == 100.0
    assert evaluate([none_found], [ref])["detail"]["ner"]["precision"] == 100.0
    # a spurious entity when there is none: F1 0, and precision/recall follow F1
    spurious = out([("衣服", "product_type")], ["好看", "的", "衣服"], [2, 0, 3], ["时尚/穿搭"])
    assert sample_scores(spurious, ref)["ner"] == 0.0
    d = evaluate([spurious], [ref])["detail"]["ner"]
    assert (d["precision"], d["recall"], d["f1"]) == (0.0, 0.0, 0.0)
    # both category lists empty: top-1 counts as correct and F1 as perfect
    assert sample_scores(out(), out(query="x"))["taxonomy"] == 1.0
    assert Counts().f1 == 1.0 and Counts(fp=1).f1 == 0.0 and Counts(fn=1).f1 == 0.0


def test_intent_chrf_is_sacrebleu_corpus_chrf():
    preds = [out(intent="用户在挑选粉底液"), out(intent="想买迪奥香水"), None]
    refs = [REF1, REF2, dict(REF1, intent_desc="找色号")]
    expected = CHRF().corpus_score(["用户在挑选粉底液", "想买迪奥香水", ""], [[r["intent_desc"] for r in refs]]).score
    assert evaluate(preds, refs)["intent_chrf"] == pytest.approx(expected)
    # per-sample score (0-1) equals the corpus score of that single sample
    assert sample_scores(preds[0], REF1)["intent"] == pytest.approx(evaluate(preds[:1], refs[:1])["intent_chrf"] / 100)


def test_sample_scores_equal_single_sample_evaluate():
    preds = [out([("dior", "brand")] * 3, ["dior", "口红dior", "香水"], [3, 2, 2], ["美妆/护肤", "美妆/彩妆"], "迪奥"), None]
    for pred in preds:
        s, m = sample_scores(pred, REF2), evaluate([pred], [REF2])
        assert s["ner"] * 100 == pytest.approx(m["ner_f1"])
        assert s["seg"] * 100 == pytest.approx(m["seg_f1"])
        assert s["tw"] * 100 == pytest.approx(m["tw_f1"])
        assert s["taxonomy"] * 100 == pytest.approx(m["taxonomy"])
        assert s["intent"] * 100 == pytest.approx(m["intent_chrf"])


def test_inputs_are_checked_and_types_accepted():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        evaluate([None, None], [REF1])
    with pytest.raises(ValueError, match="query"):
        evaluate([None], [{k: v for k, v in REF1.items() if k != "query"}])
    model = QPResult.model_validate({k: v for k, v in REF1.items() if k != "query"})
    assert evaluate([model], [REF1])["overall"] == pytest.approx(100.0)
    assert sample_scores(model, REF1, query=Q1)["ner"] == 1.0
    # garbage fields in a prediction count as empty instead of crashing
    junk = {"entities": "x", "segments": [1, None], "weights": [True, "3"], "category": 5, "intent_desc": 3}
    assert evaluate([junk], [REF1])["overall"] == 0.0
    empty = evaluate([], [])
    assert empty["n"] == 0 and empty["overall"] == 0.0 and empty["valid_rate"] == 0.0
