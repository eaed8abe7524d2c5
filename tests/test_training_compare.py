"""Paired-bootstrap intervals, slices and the dev-split gate (qp_core.training.compare, registry.gate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qp_core import registry
from qp_core.metrics import evaluate, row_counts
from qp_core.registry import GateSettings, RegistryError, gate
from qp_core.training.compare import (
    paired_bootstrap,
    point_scores,
    slice_masks,
    slice_scores,
    snapshot_vocabulary,
    verdict,
)


def _res(segments, weights, category, entities=()):
    return {"entities": [{"text": t, "type": ty} for t, ty in entities], "segments": list(segments),
            "weights": list(weights), "category": list(category), "intent_desc": "x"}


REFS = [
    {**_res(["雅诗兰黛", "粉底液"], [3, 2], ["美妆/彩妆"], [("雅诗兰黛", "brand")]), "query": "雅诗兰黛粉底液"},
    {**_res(["苹果", "手机"], [3, 2], ["数码/手机"], [("苹果", "brand")]), "query": "苹果手机"},
    {**_res(["小米", "粥", "做法"], [3, 2, 1], ["美食/食谱"]), "query": "小米粥做法"},
    {**_res(["兰蔻", "小黑瓶"], [3, 3], ["美妆/护肤"], [("兰蔻", "brand")]), "query": "兰蔻小黑瓶"},
]


def test_point_scores_from_row_counts_equal_evaluate():
    preds = [
        REFS[0],
        _res(["苹", "果手机"], [3, 2], ["美食/食谱"], [("苹果", "brand")]),
        None,
        _res(["兰蔻", "小黑瓶"], [3, 2], ["美妆/护肤", "美妆/彩妆"], [("兰蔻", "person")]),
    ]
    m = evaluate(preds, REFS)
    p = point_scores(row_counts(preds, REFS))
    for key in ("overall", "ner_f1", "seg_f1", "tw_f1", "taxonomy"):
        assert p[key] == pytest.approx(m[key]), key


def _counts(n_right, n_wrong):
    """Rows that are either perfect or empty on one query type (4 units of each task)."""
    right = [REFS[0]] * n_right
    wrong = [None] * n_wrong
    return row_counts(right + wrong, [REFS[0]] * (n_right + n_wrong))


def test_identical_systems_have_a_zero_interval_and_no_verdict():
    c = _counts(30, 10)
    cmp = paired_bootstrap(c, c, draws=200)
    for key, d in cmp["all"].items():
        assert d["diff"] == d["lo"] == d["hi"] == 0.0 and d["verdict"] == "no clear difference", key


def test_interval_excludes_zero_only_for_a_real_difference():
    n = 200
    a = _counts(n, 0)
    b = _counts(n - 40, 40)  # b is empty on 40 rows where a is perfect
    cmp = paired_bootstrap(a, b, draws=500, seed=1)
    o = cmp["all"]["overall"]
    assert o["diff"] == pytest.approx(point_scores(a)["overall"] - point_scores(b)["overall"])
    assert 0 < o["lo"] < o["diff"] < o["hi"] and o["verdict"] == "better"
    assert paired_bootstrap(b, a, draws=500, seed=1)["all"]["overall"]["verdict"] == "worse"
    # a difference on one row out of 200 cannot be told from noise
    c = _counts(n - 1, 1)
    assert paired_bootstrap(a, c, draws=500, seed=1)["all"]["overall"]["verdict"] == "no clear difference"


def test_paired_interval_is_narrower_than_unpaired_noise():
    """Both systems fail on the same hard rows: pairing cancels the shared noise."""
    rng = np.random.default_rng(0)
    hard = rng.random(400) < 0.3
    preds_a = [None if h else REFS[0] for h in hard]
    preds_b = [None if (h or i % 50 == 0) else REFS[0] for i, h in enumerate(hard)]  # b: 8 more misses
    a, b = row_counts(preds_a, [REFS[0]] * 400), row_counts(preds_b, [REFS[0]] * 400)
    o = paired_bootstrap(a, b, draws=500)["all"]["overall"]
    assert o["verdict"] == "better" and o["hi"] - o["lo"] < 4.0  # unpaired, each system alone varies ±4


def test_verdict_rule():
    assert verdict(0.1, 2.0) == "better" and verdict(-2.0, -0.1) == "worse"
    assert verdict(-0.1, 2.0) == verdict(0.0, 0.0) == "no clear difference"


def test_slices_and_traffic_weighting():
    snapshot = [{"label": json.dumps(REFS[0], ensure_ascii=False)}, {"label": REFS[2]}]
    vocab = snapshot_vocabulary(snapshot)
    assert vocab == {"雅诗兰黛", "粉底液", "小米", "粥", "做法"}
    masks = slice_masks([{"query": r["query"], "label": r} for r in REFS], vocab)
    # 苹果 and 小米 are context-dependent (ambiguous first); 兰蔻/小黑瓶 never in the snapshot -> new word
    assert [k for i in range(4) for k, m in masks.items() if m[i]] == ["rest", "ambiguous", "ambiguous", "new_word"]
    preds = [REFS[0], None, REFS[2], None]
    c = row_counts(preds, REFS)
    s = slice_scores(c, masks, shares={"ambiguous": 0.1, "new_word": 0.2, "rest": 0.7})
    assert s["rest"]["overall"] == pytest.approx(100.0) and s["new_word"]["overall"] == 0.0
    assert s["ambiguous"]["n"] == 2 and s["ambiguous"]["overall"] == pytest.approx(point_scores(c, masks["ambiguous"])["overall"])
    assert s["traffic"] == pytest.approx(0.1 * s["ambiguous"]["overall"] + 0.7 * 100.0)
    cmp = paired_bootstrap(c, row_counts([None] * 4, REFS), masks=masks,
                           shares={"ambiguous": 0.1, "new_word": 0.2, "rest": 0.7}, draws=100)
    assert cmp["rest"]["overall"]["diff"] == pytest.approx(100.0) and cmp["new_word"]["overall"]["diff"] == 0.0
    assert cmp["traffic"]["overall"]["diff"] == pytest.approx(s["traffic"])


# ------------------------------------------------------------------------------------ gate on dev

PROD = {"overall": 80.0, "ner_f1": 80.0, "seg_f1": 90.0, "tw_f1": 65.0, "taxonomy": 85.0}
S = GateSettings(tolerance=0.5, max_subtask_drop=2.0)


def test_gate_refuses_a_measurably_worse_candidate_within_tolerance():
    iv = {"diff": -0.3, "lo": -0.6, "hi": -0.1, "verdict": "worse"}
    cmp = {"all": {"overall": iv}, "n": 2000}
    cand = {**PROD, "overall": 79.7}
    assert gate(cand, PROD, S).ok  # the point rule alone lets it through
    d = gate(cand, PROD, S, comparison=cmp)
    assert not d.ok and any("measurably worse" in r for r in d.reasons)
    fine = {"all": {"overall": {**iv, "hi": 0.2, "verdict": "no clear difference"}}, "n": 2000}
    d = gate(cand, PROD, S, comparison=fine)
    assert d.ok and "95% CI" in d.reasons[-1]


def test_promotion_gates_on_the_dev_split_not_the_golden_metrics(tmp_path):
    root = tmp_path / "reg"
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    golden_great = {**PROD, "overall": 95.0}
    rec = registry.register(model, {"profile": "tiny", "metrics": golden_great}, root=root)
    dev_cand, dev_legacy = {**PROD, "overall": 47.0}, PROD
    cmp = {"all": {"overall": {"diff": -33.0, "lo": -35.0, "hi": -31.0, "verdict": "worse"}}, "n": 400}
    with pytest.raises(RegistryError, match="dev split"):
        registry.promote(rec.version, settings=S, root=root, baseline=PROD, dev=(dev_cand, dev_legacy, cmp))
    assert registry.production(root=root) is None
    ok = registry.promote(rec.version, settings=S, root=root, baseline={**PROD, "overall": 99.0},
                          dev=({**PROD, "overall": 81.0}, dev_legacy, None))
    assert ok.ok and registry.production(root=root).version == rec.version


def test_dev_split_is_disjoint_stable_and_keyed_by_the_normalised_query():
    from qp_core.training.data import in_dev_split, split_dev

    rows = [{"query": f"查询{i}", "dt": "2026-11-0" + str(1 + i % 7), "label": "{}"} for i in range(2000)]
    rows += [{"query": f"查询{i} ", "dt": "2026-11-07", "label": "{}"} for i in range(50)]  # same queries, later day
    train, dev = split_dev(rows, 0.1)
    assert 150 < len(dev) < 250  # ~10% of the 2,000 distinct queries
    assert not {r["query"].strip() for r in train} & {r["query"].strip() for r in dev}  # no dev query trained on
    dev_queries = [r["query"].strip() for r in dev]
    assert len(dev_queries) == len(set(dev_queries))  # one row per query: its newest annotation
    assert all(r["dt"] == "2026-11-07" for r in dev if int(r["query"].strip()[2:]) < 50)
    assert len(train) + sum(1 for r in rows if r["query"].strip() in set(dev_queries)) == len(rows)
    assert split_dev(list(reversed(rows)), 0.1)[1] == dev  # order of the input does not matter
    assert in_dev_split("Dior  口红", 0.5) == in_dev_split("dior 口红", 0.5)  # normalised text decides
    assert split_dev(rows, 0.0) == (rows, [])


def test_draws_that_miss_a_small_slice_are_left_out_of_its_interval():
    """A 3-row slice where a is right and b is empty everywhere: every informative draw says +100; the ~5%
    of draws that pick none of the 3 rows (both vacuously perfect) must not pull the interval to 0."""
    n = 60
    refs = [REFS[0]] * n
    a = row_counts(refs, refs)
    b = row_counts([None] * 3 + refs[3:], refs)
    small = np.zeros(n, dtype=bool)
    small[:3] = True
    cmp = paired_bootstrap(a, b, masks={"small": small}, draws=400, seed=3)
    assert cmp["small"]["overall"]["lo"] == pytest.approx(100.0) and cmp["small"]["overall"]["verdict"] == "better"


def test_grpo_dynamics_reads_flat_rewards_and_the_kl_peak_from_the_trainer_log():
    from qp_core.training.report import grpo_dynamics

    log = [{"step": i, "reward": 4.0 + (0.5 if i > 6 else 0.0), "rewards/tw_reward/mean": 0.9,
            "frac_reward_zero_std": 0.5, "kl": 18.0 if i == 7 else 0.01 * i} for i in range(1, 9)]
    line = grpo_dynamics([{"loss": 1.0}] + log)  # rows without rewards (e.g. the final summary) are skipped
    assert "steps 1–2 vs 7–8" in line and "reward 4.000 → 4.500" in line and "TW reward 0.900 → 0.900" in line
    assert "equal rewards 50%" in line and "18.000 at its peak (step 7), 0.080 at the end" in line
    assert grpo_dynamics([{"loss": 1.0}]) is None
