"""Validation step: parse + validate every generation, legacy fallback, quality report, quality gate."""

from __future__ import annotations

import json
import random

import pytest

from qp_core import paths
from qp_core.legacy import LegacyPipeline
from qp_core.normalize import normalize_query, query_key
from qp_core.schema import dump_unified, validation_errors
from qp_core.lake import QUALITY_FILE
from qp_core.nearline.settings import ValidationSettings
from qp_core.nearline.validate import IncompleteGenerations, QualityGateFailed, run_validation
from tests.fixtures.engine import write_prompt_shards

BRANDS = {"雅诗兰黛": ("美妆/彩妆", "粉底液"), "兰蔻": ("美妆/护肤", "精华"), "华为": ("数码/手机", "手机"),
          "优衣库": ("时尚/穿搭", "t恤"), "海底捞": ("美食/探店", "火锅")}


def _label(brand: str, extra: str | None) -> tuple[str, dict]:
    cat, ptype = BRANDS[brand]
    segs = [brand, ptype] + ([extra] if extra else [])
    return "".join(segs), {
        "entities": [{"text": brand, "type": "brand"}, {"text": ptype, "type": "product_type"}],
        "segments": segs, "weights": [3, 2] + ([1] if extra else []), "category": [cat],
        "intent_desc": f"用户想了解{brand}{ptype}",
    }


@pytest.fixture(scope="module")
def legacy() -> LegacyPipeline:
    rng = random.Random(3)
    rows = []
    for _ in range(120):
        q, lab = _label(rng.choice(list(BRANDS)), rng.choice([None, "推荐", "测评"]))
        rows.append({"query": q, "history": [], "notes": [], "label": dump_unified(lab)})
    return LegacyPipeline().fit(rows)


def _write_generations(dt: str, version: str, items: list[tuple[str, str, str | None]]) -> None:
    """items: (query, text, engine error) -> one generations shard file, plus matching prompts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qp_core.lake import generation_shard as shard_path

    write_prompt_shards(dt, [q for q, _, _ in items], shard_size=len(items))
    rows = [{
        "query_key": query_key(q), "query_norm": normalize_query(q), "text": text, "prompt_tokens": 100,
        "completion_tokens": 40 + i, "finish_reason": "error" if err else "stop", "error": err,
        "model_version": version, "rules_version": "r1", "prompt_version": "p1", "latency_s": 0.1 * (i + 1),
        "reason": "missing", "prefix_hash": "p", "shard": 0, "pos": i,
    } for i, (q, text, err) in enumerate(items)]
    path = shard_path(dt, version, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(path))


def _crafted():
    q1, l1 = _label("雅诗兰黛", "推荐")
    q2, l2 = _label("华为", None)
    q3, _ = _label("兰蔻", "测评")
    q4, _ = _label("优衣库", None)
    q5, _ = _label("海底捞", "推荐")
    return [
        (q1, dump_unified(l1), None),                                         # valid as is
        (q2, "```json\n" + dump_unified(l2) + "\n```", None),                 # repairable: code fence
        (q3, '{"entities":[{"text":"兰蔻","type":"brand"}],"segments":["兰', None),  # truncated
        (q4, '{"entities":[],"segments":["别的"],"weights":[1],"category":["美妆/彩妆"],"intent_desc":"x"}', None),
        (q5, "", "prompt_too_long"),                                          # engine error
    ]


def test_bad_outputs_fall_back_to_legacy(legacy):
    dt, version = "2026-11-05", "v-val"
    items = _crafted()
    _write_generations(dt, version, items)
    outcome = run_validation(dt, version, ValidationSettings(min_valid_rate=0.3), legacy=legacy)
    rows = {r["query_norm"]: r for r in outcome.rows}
    assert len(rows) == 5
    srcs = [rows[normalize_query(q)]["src"] for q, _, _ in items]
    assert srcs == ["model", "model", "fallback", "fallback", "fallback"]
    for q, _, _ in items:  # every published row carries a result valid for its own query
        r = rows[normalize_query(q)]
        assert not validation_errors(json.loads(r["result_json"]), r["query_norm"])
        assert r["model_version"] == version and r["rules_version"] == "r1" and r["prompt_version"] == "p1"
    assert rows[normalize_query(items[1][0])]["repairs"] == ["code_fence"]
    assert rows[normalize_query(items[4][0])]["error"] == "engine: prompt_too_long"
    assert rows[normalize_query(items[2][0])]["error"].startswith("parse:")

    rep = json.loads((paths.partition("curated/qp_results", dt) / QUALITY_FILE).read_text())
    assert rep["passed"] is True and rep["rows"] == 5 and rep["valid"] == 2 and rep["valid_rate"] == 0.4
    assert rep["fallback"] == 3 and rep["fallback_rate"] == 0.6 and rep["repairs"] == {"code_fence": 1}
    assert rep["finish_reasons"] == {"stop": 4, "error": 1}
    assert sum(rep["category_top1"].values()) == 5
    assert rep["tokens"]["completion_total"] == sum(40 + i for i in range(5))
    assert rep["latency_s"]["p50"] == pytest.approx(0.3) and rep["latency_s"]["p95"] == pytest.approx(0.48)
    assert rep["errors"]["engine:prompt_too_long"] == 1

    # the KV publisher's reader sees exactly these rows
    from qp_core.nearline.publish import check_quality, read_results

    assert check_quality(dt)["passed"] is True
    assert sorted(r["query_key"] for r in read_results(dt)) == sorted(r["query_key"] for r in outcome.rows)

    # a rerun replaces the partition whole: same rows, one data file
    run_validation(dt, version, ValidationSettings(min_valid_rate=0.3), legacy=legacy)
    assert len(read_results(dt)) == 5
    assert len(list(paths.partition("curated/qp_results", dt).glob("*.parquet"))) == 1


def test_quality_gate_fails_and_publishes_nothing(legacy):
    from qp_core.nearline.publish import PublishRefused, check_quality, read_results

    dt, version = "2026-11-06", "v-gate"
    _write_generations(dt, version, _crafted())
    # a good earlier run of the date exists...
    run_validation(dt, version, ValidationSettings(min_valid_rate=0.3), legacy=legacy)
    assert len(read_results(dt)) == 5
    # ...then a run below the threshold fails: no rows left, report says why, publish refuses the date
    with pytest.raises(QualityGateFailed) as err:
        run_validation(dt, version, ValidationSettings(min_valid_rate=0.9), legacy=legacy)
    assert err.value.report["passed"] is False and err.value.report["valid_rate"] == 0.4
    part = paths.partition("curated/qp_results", dt)
    assert not list(part.glob("*.parquet"))
    assert json.loads((part / QUALITY_FILE).read_text())["passed"] is False
    with pytest.raises(PublishRefused):
        check_quality(dt)


def test_validate_job_exit_codes(legacy, monkeypatch):
    from jobs import validate as job

    dt, version = "2026-11-07", "v-job"
    _write_generations(dt, version, _crafted())
    monkeypatch.setattr("qp_core.legacy.load_or_train", lambda *a, **k: legacy)
    with pytest.raises(SystemExit) as exit_:
        job.main(["--dt", dt, "--model-version", version, "--min-valid-rate", "0.95"])
    assert exit_.value.code == 2
    report = job.main(["--dt", dt, "--model-version", version, "--min-valid-rate", "0.2"])
    assert report["passed"] is True and report["rows"] == 5


def test_missing_shard_is_refused(legacy):
    dt, version = "2026-11-08", "v-miss"
    _write_generations(dt, version, _crafted())
    write_prompt_shards(dt, [q for q, _, _ in _crafted()] + ["新查询"], shard_size=5)  # now 2 prompt shards
    with pytest.raises(IncompleteGenerations, match=r"\[1\]"):
        run_validation(dt, version, ValidationSettings(), legacy=legacy)


def test_empty_day_passes_with_empty_partition(legacy):
    dt, version = "2026-11-09", "v-empty"
    part = paths.partition("curated/prompts", dt)
    part.mkdir(parents=True)
    (part / "_manifest.json").write_text(json.dumps({"dt": dt, "rows": 0, "shards": []}))
    out = run_validation(dt, version, ValidationSettings(), legacy=legacy)
    assert out.rows == [] and out.report["passed"] is True and out.report["rows"] == 0


@pytest.mark.vllm
@pytest.mark.slow
def test_real_engine_outputs_end_to_end(legacy, vllm_engine):
    """prompts → vLLM (random-init tiny model) → validation: every query ends with a valid result."""
    from qp_core.nearline.generate import run_generation
    from qp_core.nearline.settings import GenerationSettings
    from tests.fixtures.engine import engine_settings

    dt, version = "2026-11-10", "v-e2e"
    queries = [_label(b, t)[0] for b in BRANDS for t in (None, "推荐")]
    write_prompt_shards(dt, queries, shard_size=4)
    run_generation(dt, vllm_engine.model_dir, version, settings=GenerationSettings(engine=engine_settings()),
                   engine=vllm_engine, progress=False)
    outcome = run_validation(dt, version, ValidationSettings(min_valid_rate=0.0), legacy=legacy)
    assert len(outcome.rows) == len(queries)
    for r in outcome.rows:
        assert r["src"] in {"model", "fallback"}
        assert not validation_errors(json.loads(r["result_json"]), r["query_norm"])
    rep = outcome.report
    assert rep["valid"] + rep["fallback"] == len(queries) and rep["unresolved"] == 0
    assert sum(rep["finish_reasons"].values()) == len(queries) and rep["tokens"]["completion_total"] > 0
