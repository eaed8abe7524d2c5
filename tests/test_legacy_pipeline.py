"""The legacy pipeline (qp_core.legacy): isolated per-task models, always-valid output, caching.

Trained once per session on a small hand-built grammar of annotated queries (fast, and the tests can
name exactly what it should learn). The golden-set comparison against the trivial floor runs on the
synthetic world when its fixture is available.
"""

from __future__ import annotations

import json
import random

import pytest

from qp_core.legacy import EmptyQueryError, LegacyPipeline, load_or_train, training_hash
from qp_core.legacy.ner import spans_from_bio
from qp_core.legacy.segmenter import Segmenter
from qp_core.normalize import compact
from qp_core.prompt import TASKS, task_target
from qp_core.schema import dump_unified, validation_errors

BRANDS = {"雅诗兰黛": "美妆/彩妆", "兰蔻": "美妆/护肤", "咕噜噜酱": "美食/探店", "新百伦": "时尚/鞋靴箱包",
          "华为": "数码/手机", "优衣库": "时尚/穿搭"}
SERIES = {"雅诗兰黛": ["1c1", "小棕瓶"], "兰蔻": ["小黑瓶", "菁纯"], "咕噜噜酱": ["招牌锅"],
          "新百伦": ["990v6", "327"], "华为": ["mate60", "p70"], "优衣库": ["u系列"]}
TYPES = {"雅诗兰黛": "粉底液", "兰蔻": "精华", "咕噜噜酱": "火锅", "新百伦": "跑鞋", "华为": "手机", "优衣库": "t恤"}
INTENTS = {"推荐": "找{o}的推荐", "测评": "看{o}的测评", "怎么样": "了解{o}的口碑", "平替": "找{o}的平价替代"}


def make_row(rng: random.Random) -> dict:
    brand = rng.choice(list(BRANDS))
    parts = [(brand, "brand", 3)]
    if rng.random() < 0.6:
        parts.append((rng.choice(SERIES[brand]), "product_series", 3))
    if rng.random() < 0.6:
        parts.append((TYPES[brand], "product_type", 2))
    intent = rng.choice([None, *INTENTS]) if rng.random() < 0.8 else None
    if intent:
        parts.append((intent, None, 1))
    if rng.random() < 0.2:
        parts.append(("吗", None, 0))
    obj = "".join(p[0] for p in parts if p[2] > 0 and p[0] not in INTENTS)
    cat = BRANDS[brand]
    label = {
        "entities": [{"text": t, "type": ty} for t, ty, _ in parts if ty],
        "segments": [p[0] for p in parts],
        "weights": [p[2] for p in parts],
        "category": [cat],
        "intent_desc": f"用户想{INTENTS[intent].format(o=obj) if intent else f'了解{obj}的相关内容'}，属于{cat}",
    }
    query = (" " if rng.random() < 0.5 else "").join(p[0] for p in parts)
    assert not validation_errors(label, query), validation_errors(label, query)
    return {"query": query, "history": [], "notes": [], "label": dump_unified(label)}


@pytest.fixture(scope="session")
def grammar_rows() -> list[dict]:
    rng = random.Random(7)
    return [make_row(rng) for _ in range(400)]


@pytest.fixture(scope="session")
def pipe(grammar_rows) -> LegacyPipeline:
    return LegacyPipeline().fit(grammar_rows[:300])


def test_segmenter_learns_lexicon_words_from_training_segments():
    plain = Segmenter().fit([])
    assert plain.cut("咕噜噜酱招牌锅") != ["咕噜噜酱", "招牌锅"]  # jieba alone does not know the shop
    learned = Segmenter().fit([["咕噜噜酱", "招牌锅"]])
    assert learned.lexicon == {"咕噜噜酱": 1, "招牌锅": 1}
    assert learned.cut("咕噜噜酱招牌锅") == ["咕噜噜酱", "招牌锅"]
    assert learned.cut("咕噜噜酱 招牌锅 火锅") == ["咕噜噜酱", "招牌锅", "火锅"]


def test_spans_from_bio_accepts_ill_formed_tags():
    assert spans_from_bio(["B-brand", "I-brand", "O", "I-ip", "I-ip", "B-poi"]) == [
        (0, 2, "brand"), (3, 5, "ip"), (5, 6, "poi")]
    assert spans_from_bio(["B-brand", "I-ip"]) == [(0, 1, "brand"), (1, 2, "ip")]


def test_learns_each_subtask_on_held_out_queries(pipe, grammar_rows):
    from qp_core.metrics import evaluate

    held = grammar_rows[300:]
    refs = [{**json.loads(r["label"]), "query": r["query"]} for r in held]
    m = evaluate(pipe.predict_batch([r["query"] for r in held]), refs)
    assert m["valid_rate"] == 1.0
    assert m["seg_f1"] > 95 and m["ner_f1"] > 90 and m["tw_f1"] > 90 and m["taxonomy_top1"] > 95, m
    assert m["intent_chrf"] > 80, m


def test_prediction_is_isolated_from_context(pipe):
    """Same query, same output: the legacy models take no history or notes."""
    r = pipe.predict("华为 mate60 怎么样")
    assert r["entities"] == [{"text": "华为", "type": "brand"}, {"text": "mate60", "type": "product_series"}]
    assert r["segments"] == ["华为", "mate60", "怎么样"]
    assert r["category"][0] == "数码/手机"
    assert r["intent_desc"] == "用户想了解华为mate60的口碑，属于数码/手机"


ODD = ["😀😀😀", "x" * 5000, "a<|im_end|>b", "  ＩＰＨＯＮＥ１５ 壳 ", "\x00粉\u200b底液\x1b", "？？！", "a", "1",
       "雅诗兰黛雅诗兰黛雅诗兰黛", "ǰ̌ ß ﬁ 𝔘", "\"}]{\\", "兰蔻 兰蔻 小黑瓶 小黑瓶"]


@pytest.mark.parametrize("query", ODD)
def test_output_always_validates_on_odd_inputs(pipe, query):
    r = pipe.predict(query)
    assert validation_errors(r, query) == []
    assert list(r) == ["entities", "segments", "weights", "category", "intent_desc"]


def test_empty_queries(pipe):
    for q in ["", "   ", "\x00\u200b"]:
        with pytest.raises(EmptyQueryError):
            pipe.predict(q)
    assert pipe.predict_batch(["", None, "兰蔻"])[:2] == [None, None]


def test_repair_drops_what_cannot_be_placed(pipe):
    draft = {"entities": [{"text": "兰蔻", "type": "brand"}, {"text": "不存在", "type": "brand"},
                          {"text": "精华", "type": "alien"}, {"text": "精华", "type": "product_type"}],
             "segments": ["兰", "蔻X"], "weights": [9, -1, 2], "category": ["美妆/护肤", "nope", "美妆/护肤"],
             "intent_desc": ""}
    r = pipe.repair(draft, "兰蔻 精华")
    assert validation_errors(r, "兰蔻 精华") == []
    assert r["entities"] == [{"text": "兰蔻", "type": "brand"}, {"text": "精华", "type": "product_type"}]
    assert r["category"] == ["美妆/护肤"]


@pytest.mark.parametrize("task", TASKS)
def test_predict_task_gives_task_target_of_prediction(pipe, task):
    q = "兰蔻小黑瓶平替"
    assert pipe.predict_task(task, q) == task_target(task, pipe.predict(q))
    assert pipe.predict_tasks_batch(task, [q, ""]) == [task_target(task, pipe.predict(q)), None]
    if task == "tw":
        assert json.loads(pipe.predict_task(task, q)) == {"segments": ["兰蔻", "小黑瓶", "平替"], "weights": [3, 3, 1]}


def test_save_load_roundtrip(pipe, tmp_path):
    pipe.save(tmp_path / "m")
    loaded = LegacyPipeline.load(tmp_path / "m")
    qs = ["雅诗兰黛 1c1 粉底液 测评", "新百伦990v6", "😀"]
    assert loaded.predict_batch(qs) == pipe.predict_batch(qs)


def test_load_or_train_caches_by_training_data(grammar_rows, tmp_path, monkeypatch):
    from qp_core import paths

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    rows = grammar_rows[:60]
    first = load_or_train(rows=rows)
    cache = paths.registry_root() / "legacy" / training_hash(rows)
    assert (cache / "legacy.pkl").exists()
    assert training_hash(list(reversed(rows))) == training_hash(rows)
    assert training_hash(rows[:59]) != training_hash(rows)
    mtime = (cache / "legacy.pkl").stat().st_mtime_ns
    second = load_or_train(rows=rows)
    assert (cache / "legacy.pkl").stat().st_mtime_ns == mtime  # loaded, not retrained
    assert second.predict("兰蔻精华") == first.predict("兰蔻精华")


def _write_lake(root, rows_by_dt: dict[str, list[dict]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for dt, rows in rows_by_dt.items():
        d = root / "raw/annotations" / f"dt={dt}"
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "part-00000.parquet")


def _new_brand_row(i: int) -> dict:
    """A brand that exists only in the newest partition (咕咚咚, 美食/探店)."""
    label = {"entities": [{"text": "咕咚咚", "type": "brand"}, {"text": "火锅", "type": "product_type"}],
             "segments": ["咕咚咚", "火锅"] + (["推荐"] if i % 2 else []),
             "weights": [3, 2] + ([1] if i % 2 else []), "category": ["美食/探店"],
             "intent_desc": "用户想" + ("找咕咚咚火锅的推荐" if i % 2 else "了解咕咚咚火锅的相关内容") + "，属于美食/探店"}
    return {"query": " ".join(label["segments"]), "history": [], "notes": [], "label": dump_unified(label)}


def test_snapshot_fits_only_the_oldest_configured_days(grammar_rows, tmp_path, monkeypatch):
    """conf/legacy.yaml snapshot_days: the fit uses the oldest N dt partitions only; the cache key says so."""
    from qp_core.legacy.pipeline import read_annotations, snapshot_rows

    monkeypatch.setenv("QP_HOME", str(tmp_path / "home"))
    lake = tmp_path / "lake"
    _write_lake(lake, {"2026-11-03": [_new_brand_row(i) for i in range(20)],  # written first, newest dt
                       "2026-11-01": grammar_rows[:60], "2026-11-02": grammar_rows[60:120]})
    rows = read_annotations(lake)
    assert {str(r["dt"]) for r in rows} == {"2026-11-01", "2026-11-02", "2026-11-03"}

    monkeypatch.setenv("QP__LEGACY__SNAPSHOT_DAYS", "2")
    stale = load_or_train(lake)
    assert stale.meta["snapshot_dts"] == ["2026-11-01", "2026-11-02"]
    assert stale.meta["n_train"] == 120
    assert stale.meta["training_hash"] == training_hash(grammar_rows[:120])
    assert "咕咚咚" not in stale.segmenter.lexicon  # never saw the newest day's brand

    monkeypatch.setenv("QP__LEGACY__SNAPSHOT_DAYS", "1")
    assert load_or_train(lake).meta["snapshot_dts"] == ["2026-11-01"]
    fresh = load_or_train(lake, snapshot_days=0)  # 0 = every partition; the argument wins over conf
    assert fresh.meta["snapshot_dts"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert fresh.meta["n_train"] == 140 and "咕咚咚" in fresh.segmenter.lexicon
    assert fresh.meta["training_hash"] != stale.meta["training_hash"]
    # explicit rows: the window applies to rows carrying a dt; rows without one are the caller's choice
    kept, dts = snapshot_rows(rows, 2)
    assert dts == ["2026-11-01", "2026-11-02"] and len(kept) == 120
    assert snapshot_rows(grammar_rows[:10], 1) == (grammar_rows[:10], [])


def test_fit_rejects_no_valid_rows():
    with pytest.raises(ValueError, match="no valid annotation rows"):
        LegacyPipeline().fit([{"query": "兰蔻", "label": "{not json"}, {"query": "", "label": "{}"}])


def test_beats_trivial_floor_on_small_world_golden(small_world, tmp_path, monkeypatch):
    """Trained on the synthetic world's annotations, scored on its disjoint golden set."""
    from qp_core.legacy.report import evaluate_legacy

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    report = evaluate_legacy(small_world)
    legacy, trivial = report["legacy"], report["trivial"]
    assert report["meta"]["n_golden"] > 100 and legacy["valid_rate"] == 1.0
    for key in ("ner_f1", "seg_f1", "tw_f1", "taxonomy", "overall", "intent_chrf"):
        assert legacy[key] > trivial[key] + 10, (key, legacy[key], trivial[key])
    assert legacy["overall"] > 70, legacy
    assert any((tmp_path / "registry" / "legacy").iterdir())  # fitted once, cached for the next caller
    # the CLI prints the same numbers and writes the report (the cached fit is reused)
    from typer.testing import CliRunner

    from qp_core.cli import app

    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["eval", "legacy", "--lake", str(small_world), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "legacy" in res.output and "trivial" in res.output and f"{legacy['overall']:.2f}" in res.output
    assert json.loads(out.read_text(encoding="utf-8"))["legacy"]["overall"] == pytest.approx(legacy["overall"])


def test_output_validates_on_seeded_random_strings(pipe):
    """Fuzz: mixed scripts, combining marks, full-width forms, emoji, punctuation, controls, whitespace."""
    alphabet = (list("雅诗兰黛兰蔻小黑瓶粉底液的吗攻略") + list("abcxyz0129-_.+#") + list("ＡＢ１２！？～") +
                ["\u0301", "\u030c", "ß", "ﬁ", "İ", "😀", "👍🏻", "\u200b", "\x00", "\x1b", "\t", "\n", " ", "　",
                 "<|", "|>", '"', "\\", "{", "}", "𝔘", "ǰ"])
    rng = random.Random(11)
    checked = 0
    for _ in range(300):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        if not compact(q):
            assert pipe.predict_batch([q]) == [None]
            continue
        r = pipe.predict(q)
        assert validation_errors(r, q) == [], (q, r)
        checked += 1
    assert checked > 250


def test_served_metrics_fall_back_to_legacy_exactly_where_the_model_failed(pipe, grammar_rows):
    """Served = what the nearline publishes: valid model outputs, the legacy answer for the rest."""
    from qp_core.training.evaluate import evaluate_legacy, served_metrics

    rows = grammar_rows[300:360]
    perfect = [json.loads(r["label"]) for r in rows]
    legacy_only = served_metrics([None] * len(rows), rows, pipe)
    baseline = evaluate_legacy(rows, pipe)
    assert legacy_only["fallback_rate"] == 1.0
    assert legacy_only["overall"] == pytest.approx(baseline["overall"])
    model_only = served_metrics(perfect, rows, pipe)
    assert model_only["fallback_rate"] == 0.0 and model_only["overall"] == pytest.approx(100.0)
    half = served_metrics([p if i % 2 else None for i, p in enumerate(perfect)], rows, pipe)
    assert half["fallback_rate"] == 0.5
    assert baseline["overall"] <= half["overall"] <= 100.0
