"""The synthetic world: rules-as-code ground truth, determinism, and the realism the pipeline relies on."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qp_core.normalize import compact, normalize_query
from qp_core.schema import dump_unified, validation_errors
from qp_core.world.labels import label_query
from qp_core.world.lexicon import AMBIGUOUS, lexicon, lexicon_problems, lookup

SMALL = dict(days=2, rows_per_day=600, annotations_total=80, golden=60, notes=120, head_size=100, users=100)


def _words(q: str):
    return [lookup(t) for t in q.split()]


def _label(q: str, history=(), notes=()):
    return label_query(_words(q), [_words(h) for h in history], list(notes))


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def test_lexicon_is_normalised_and_unambiguous_outside_the_ambiguous_list():
    assert lexicon_problems() == []


# The worked examples of conf/rules/*.md: the ground truth must follow the rules the prompt shows.
@pytest.mark.parametrize(
    "query, segments, weights, category",
    [
        ("雅诗兰黛 1c1 粉底液 色号", ["雅诗兰黛", "1c1", "粉底液", "色号"], [3, 3, 2, 2], ["美妆/彩妆", "美妆/护肤"]),
        ("兰蔻 小黑瓶 平替", ["兰蔻", "小黑瓶", "平替"], [3, 3, 1], ["美妆/护肤"]),
        ("nb 990v6 怎么样", ["nb", "990v6", "怎么样"], [3, 3, 1], ["时尚/鞋靴箱包"]),
        ("上海 citywalk 路线", ["上海", "citywalk", "路线"], [3, 2, 2], ["旅行/目的地"]),
        ("有没有 平价 的 冲锋衣", ["有没有", "平价", "的", "冲锋衣"], [0, 1, 0, 3], ["时尚/穿搭"]),
        ("粉底液", ["粉底液"], [3], ["美妆/彩妆"]),
        ("上海 外滩", ["上海", "外滩"], [2, 3], ["旅行/目的地"]),
        ("穿搭 冬季", ["穿搭", "冬季"], [3, 1], ["时尚/穿搭"]),
        ("刘亦菲 穿搭", ["刘亦菲", "穿搭"], [3, 2], ["时尚/穿搭", "娱乐/明星"]),
        ("原神 攻略", ["原神", "攻略"], [3, 1], ["游戏/手游"]),
        ("刘亦菲 同款 口红", ["刘亦菲", "同款", "口红"], [3, 1, 3], ["美妆/彩妆", "娱乐/明星"]),
        ("成都 火锅", ["成都", "火锅"], [3, 3], ["美食/探店", "旅行/目的地"]),
        ("火锅 做法", ["火锅", "做法"], [3, 2], ["美食/食谱", "美食/探店"]),
        ("耐克 跑鞋", ["耐克", "跑鞋"], [3, 2], ["健身/运动", "时尚/鞋靴箱包"]),
        ("北京 环球影城 酒店", ["北京", "环球影城", "酒店"], [2, 3, 2], ["旅行/酒店民宿", "旅行/目的地"]),
    ],
)
def test_rules_examples(query, segments, weights, category):
    lab = _label(query)
    assert validation_errors(lab, query) == []
    assert (lab["segments"], lab["weights"], lab["category"]) == (segments, weights, category)


def test_intent_examples():
    assert _label("雅诗兰黛 1c1 粉底液 测评")["intent_desc"] == "用户想看雅诗兰黛1c1粉底液的测评，属于美妆/彩妆"
    assert _label("兰蔻 小黑瓶 平替")["intent_desc"] == "用户想找兰蔻小黑瓶的平价替代，属于美妆/护肤"
    assert _label("苹果", history=["减脂餐 食谱"])["intent_desc"] == "用户想了解苹果的相关内容，属于美食/食谱"


def test_ambiguous_word_follows_evidence_then_history_then_notes_then_default():
    assert _label("苹果 iphone15")["entities"][0] == {"text": "苹果", "type": "brand"}
    assert _label("苹果 macbookair")["category"] == ["数码/电脑", "数码/手机"]
    assert _label("苹果 做法")["category"] == ["美食/食谱"]
    # history: the most recent deciding query wins; ambiguous history is skipped
    assert _label("苹果", history=["iphone15 续航"])["category"] == ["数码/手机", "美食/食谱"]
    fruit = _label("苹果", history=["iphone15", "减脂餐 食谱", "小米"])
    assert fruit["category"] == ["美食/食谱", "数码/手机"]
    assert fruit["entities"] == [{"text": "苹果", "type": "product_type"}]
    # history beats notes; notes by majority, ties to the earlier note
    assert _label("小米", history=["iphone15"], notes=["美食/食谱"] * 3)["category"][0] == "数码/手机"
    assert _label("小米", notes=["数码/手机", "美食/食谱", "美食/食谱"])["category"][0] == "美食/食谱"
    assert _label("小米", notes=["美食/食谱", "数码/手机"])["category"][0] == "美食/食谱"
    assert _label("荣耀 推荐", notes=["游戏/手游"])["entities"] == [{"text": "荣耀", "type": "ip"}]
    assert _label("奶油风")["category"] == ["家居/装修", "时尚/穿搭"]
    assert _label("小米")["category"] == ["数码/手机", "美食/食谱"]


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    from qp_core.world import generate

    generate(tmp_path / "a", seed=11, **SMALL)
    generate(tmp_path / "b", seed=11, **SMALL)
    generate(tmp_path / "c", seed=12, **SMALL)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 1 + 1 + 2 + 2  # notes, golden, 2 log days, 2 annotation days
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_rerun_overwrites_partitions(tmp_path):
    from qp_core.world import generate

    generate(tmp_path, seed=3, **SMALL)
    before = _files(tmp_path)
    generate(tmp_path, seed=3, **SMALL)
    assert _files(tmp_path) == before


# ------------------------------------------------------------------------------------- on small_world
def _annotations(root: Path) -> list[dict]:
    return pq.read_table(root / "raw/annotations").to_pylist()


def _golden(root: Path) -> list[dict]:
    return pq.read_table(root / "raw/golden").to_pylist()


def _log(root: Path):
    return pq.read_table(root / "raw/query_log").to_pandas()


def test_every_label_is_valid_and_canonical(small_world):
    rows = _annotations(small_world) + _golden(small_world)
    assert len(rows) == 300 + 200
    for r in rows:
        lab = json.loads(r["label"])
        assert validation_errors(lab, r["query"]) == [], r
        assert dump_unified(lab) == r["label"]
        assert r["query"] == normalize_query(r["query"])
        assert len(lab["intent_desc"]) <= 60


def test_golden_is_disjoint_from_annotations_and_never_logged(small_world):
    golden = {compact(r["query"]) for r in _golden(small_world)}
    assert len(golden) == 200
    annotated = {compact(r["query"]) for r in _annotations(small_world)}
    logged = {compact(q) for q in _log(small_world)["query"].dropna()}
    assert not golden & annotated
    assert not golden & logged
    assert annotated <= logged  # annotations are sampled from the logs


def test_malformed_rate_within_bounds(tmp_path):
    from qp_core.world import generate

    generate(tmp_path, seed=5, days=1, rows_per_day=20000, annotations_total=10, golden=500, notes=60, head_size=200,
             malformed_rate=0.02)
    q = _log(tmp_path)["query"]
    # broken rows built from real queries must not leak golden ones either (cleaning would recover them)
    assert not {compact(r["query"]) for r in _golden(tmp_path)} & {compact(v) for v in q.dropna()}

    def malformed(v):
        if v is None or not compact(v) or len(v) >= 1000:
            return True
        if any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F or 0x200B <= ord(ch) <= 0x200F for ch in v):
            return True
        return not any(ch.isalnum() for ch in v)  # emoji-only

    rate = sum(map(malformed, q)) / len(q)
    assert 0.015 <= rate <= 0.025, rate
    kinds = Counter(
        "null" if v is None else "long" if len(v) >= 5000 else "empty" if not v.strip() else "other"
        for v in q if malformed(v)
    )
    assert kinds["null"] and kinds["long"] and kinds["empty"] and kinds["other"]


def test_label_sets_within_conf(small_world):
    from qp_core.schema import entity_types, taxonomy_labels

    types, labels = Counter(), Counter()
    for r in _annotations(small_world) + _golden(small_world):
        lab = json.loads(r["label"])
        types.update(e["type"] for e in lab["entities"])
        labels.update(lab["category"])
    assert set(types) <= set(entity_types()) and set(labels) <= set(taxonomy_labels())
    assert len(types) == len(entity_types())  # every entity type occurs
    assert len(labels) >= 14
    notes = pq.read_table(small_world / "raw/notes").to_pandas()
    assert set(notes["category"]) <= set(taxonomy_labels())


def _small_world_lexicon():
    from qp_core.world.drift import world_lexicon
    from qp_core.world.settings import load_world_settings
    from tests.fixtures.world import SMALL_WORLD

    return world_lexicon(load_world_settings(**SMALL_WORLD))


def _segments(r: dict) -> set[str]:
    return {compact(t) for t in json.loads(r["label"])["segments"]}


def test_slang_appears_only_from_its_first_day(small_world):
    """Slang, trending IPs/people and drifted words (the world's lexicon, drift applied) from day 1 only."""
    lex = _small_world_lexicon()
    late = {w.text for w in lex.all_words() if w.first_day == 1 and w.text not in AMBIGUOUS}
    # substring search in raw logs only for words no other lexicon word contains ("nb" is inside "newbalance")
    texts = {w.text for w in lex.all_words()}
    safe = [t for t in late if len(t) >= 2 and not any(t != o and t in o for o in texts)]
    log = _log(small_world).dropna(subset=["query"])
    day0 = log[log["dt"] == "2026-11-01"]["query"].map(compact)
    day1 = log[log["dt"] == "2026-11-02"]["query"].map(compact)
    assert not any(any(s in q for s in safe) for q in day0)
    assert sum(any(s in q for s in safe) for q in day1) >= 50
    # annotations: exact words (their ground-truth segments)
    ann = _annotations(small_world)
    assert not any(_segments(r) & late for r in ann if str(r["dt"]) == "2026-11-01")
    assert sum(bool(_segments(r) & late) for r in ann if str(r["dt"]) == "2026-11-02") >= 30


def test_drift_moves_entity_words_to_later_days_deterministically():
    from qp_core.world.drift import COMMON_KINDS, DRIFT_KINDS, drift_days
    from qp_core.world.lexicon import lexicon

    base = lexicon()
    moved = drift_days(base, seed=1, days=7, entity_share=0.5, common_share=0.2)
    assert moved == drift_days(base, seed=1, days=7, entity_share=0.5, common_share=0.2)
    assert moved != drift_days(base, seed=2, days=7, entity_share=0.5, common_share=0.2)
    assert drift_days(base, seed=1, days=1, entity_share=0.5) == {}  # no later day to move to
    assert set(moved.values()) == set(range(1, 7))  # spread over days 1..days-1
    kinds = {w.text: w.kind for w in base.all_words()}
    assert not set(moved) & set(AMBIGUOUS)
    assert {kinds[t] for t in moved} <= set(DRIFT_KINDS) | set(COMMON_KINDS)
    assert not any(kinds[t] == "location" for t in moved)
    entity = [t for t in moved if kinds[t] in DRIFT_KINDS]
    n_units = len(base.brands) - 3 + sum(len(v) for v in base.series.values()) - 1 + len(base.persons) \
        + len(base.ips) - 1 + len(base.pois)
    assert len(entity) >= 0.5 * n_units  # aliases and a brand's series come along, so at least the share
    for b in base.brands:  # a drifted brand: its aliases the same day, its series no earlier
        if b.text in moved:
            assert all(moved[a.text] >= moved[b.text] for a in base.aliases[b.text])
            assert all(moved.get(x.text, 0) >= moved[b.text] for x in base.series[b.text] if x.text not in AMBIGUOUS)
    # stable vocabulary when both shares are 0 (the lexicon's own late slang only)
    assert drift_days(base, seed=1, days=7, entity_share=0, common_share=0) == {}


def test_drifted_words_never_appear_before_their_first_day(tmp_path):
    """Logs, annotations and notes of a 4-day world never use a word before its (drifted) first day."""
    from qp_core.world import generate
    from qp_core.world.drift import world_lexicon
    from qp_core.world.settings import load_world_settings

    kw = dict(seed=5, days=4, rows_per_day=800, annotations_total=400, golden=80, notes=300, head_size=150, users=200)
    generate(tmp_path, **kw)
    lex = world_lexicon(load_world_settings(**kw))
    first = {w.text: w.first_day for w in lex.all_words() if w.text not in AMBIGUOUS}
    assert sum(d > 0 for d in first.values()) >= 80  # the default conf drifts a large share
    dates = load_world_settings(**kw).dates()
    seen_late = 0
    for r in _annotations(tmp_path):
        day = dates.index(str(r["dt"]))
        late = [t for t in _segments(r) if first.get(t, 0) > day]
        assert not late, (r["dt"], r["query"], late)
        seen_late += any(first.get(t, 0) == day > 0 for t in _segments(r))
    assert seen_late >= 40  # new words are annotated on their first day (trend boost, novelty labelling)
    notes = pq.read_table(tmp_path / "raw/notes").to_pylist()
    for n in notes:
        day = dates.index(n["created_dt"]) if n["created_dt"] in dates else -1
        assert not [t for t in n["tags"] if first.get(t, 0) > max(day, 0)], n
    # the golden set (drawn on the last day) holds words the first day never had
    assert sum(any(first.get(t, 0) > 0 for t in _segments(r)) for r in _golden(tmp_path)) >= 15


def test_zipf_head_repeats_and_tail_is_new(small_world):
    log = _log(small_world).dropna(subset=["query"])
    log = log.assign(q=log["query"].map(compact))
    d0 = log[log["dt"] == "2026-11-01"]["q"].value_counts()
    d1 = log[log["dt"] == "2026-11-02"]["q"].value_counts()
    top = list(d0.index[:30])
    # the head comes back every day (head queries with words drifted to day 1 join then and take some mass)
    assert sum(q in d1.index for q in top) >= 24
    assert d0.iloc[0] >= 10 * d0.median()  # heavy head
    new = [q for q in d1.index if q not in d0.index]
    assert len(new) >= 0.5 * len(d1)  # the tail is mostly new


def test_sessions_refine_queries(small_world):
    ann = _annotations(small_world)
    with_history = [r for r in ann if r["history"]]
    assert len(with_history) >= 0.15 * len(ann)
    log = _log(small_world)
    sizes = log.groupby("session_id").size()
    assert (sizes >= 2).mean() >= 0.2


def test_context_decides_ambiguous_queries(small_world):
    rows = _annotations(small_world) + _golden(small_world)
    tops = defaultdict(set)
    by_word = defaultdict(Counter)
    for r in rows:
        lab = json.loads(r["label"])
        words = [w for w in AMBIGUOUS if w in r["query"]]
        if words and len(lab["category"]) >= 2:
            tops[r["query"]].add(lab["category"][0])
            by_word[words[0]][lab["category"][0]] += 1
    assert any(len(v) >= 2 for v in tops.values()), "no ambiguous query labelled differently in two contexts"
    # the non-default sense is frequent: a model that ignores context cannot get these right
    non_default = sum(c for w, cnt in by_word.items() for lab, c in cnt.items() if lab != AMBIGUOUS[w][0].label)
    assert non_default >= 10


def test_cli_generate(tmp_path):
    from typer.testing import CliRunner

    from qp_core.cli import app

    res = CliRunner().invoke(
        app,
        ["world", "generate", "--out", str(tmp_path), "--seed", "3", "--days", "1", "--rows-per-day", "300",
         "--annotations", "20", "--golden", "20", "--notes", "60"],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "raw/query_log/dt=2026-11-01/part-00000.parquet").exists()
    assert len(pq.read_table(tmp_path / "raw/golden")) == 20
