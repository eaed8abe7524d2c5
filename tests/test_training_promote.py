"""The chain's promote stage: the best stage on the dev split, gated on dev with a paired interval."""

from __future__ import annotations

import json

import pytest

from qp_core import registry

Q = ["雅诗兰黛粉底液", "兰蔻小黑瓶", "苹果手机", "小米粥做法"]
REFS = [
    {"entities": [{"text": "雅诗兰黛", "type": "brand"}], "segments": ["雅诗兰黛", "粉底液"], "weights": [3, 2],
     "category": ["美妆/彩妆"], "intent_desc": "x"},
    {"entities": [{"text": "兰蔻", "type": "brand"}], "segments": ["兰蔻", "小黑瓶"], "weights": [3, 3],
     "category": ["美妆/护肤"], "intent_desc": "x"},
    {"entities": [{"text": "苹果", "type": "brand"}], "segments": ["苹果", "手机"], "weights": [3, 2],
     "category": ["数码/手机"], "intent_desc": "x"},
    {"entities": [], "segments": ["小米", "粥", "做法"], "weights": [3, 2, 1], "category": ["美食/食谱"],
     "intent_desc": "x"},
]
ROWS = [{"query": q, "label": json.dumps(r, ensure_ascii=False)} for q, r in zip(Q * 25, REFS * 25)]


def _metrics(n_right: int) -> dict:
    """Metrics (with per-row counts) of a system right on the first ``n_right`` rows, empty elsewhere."""
    from qp_core.training.evaluate import score

    preds = [json.loads(r["label"]) if i < n_right else None for i, r in enumerate(ROWS)]
    m = score(preds, ROWS)
    m["served"] = dict(m)
    return m


@pytest.fixture
def run(tmp_path, monkeypatch):
    from qp_core.training.run import ChainContext, mark_done as _mark_done
    from qp_core.training.config import load_training_settings
    from qp_core.training.state import write_json_atomic

    monkeypatch.setenv("QP_HOME", str(tmp_path / "home"))
    ctx = ChainContext(load_training_settings("ci"), "t", tmp_path / "run", "2026-11-07", progress=lambda m: None)

    def setup(golden: dict[str, int], dev: dict[str, int]):
        for stage in ("sft1", "sft2"):
            model = ctx.stage_dir(stage) / "model"
            model.mkdir(parents=True)
            (model / "config.json").write_text("{}")
            _mark_done(ctx, stage, {"model_dir": str(model), "wall_s": 1.0})
        for split, table in (("golden", golden), ("dev", dev)):
            for name, n in table.items():
                write_json_atomic(ctx.stage_dir("evaluate") / split / f"{name}.json", _metrics(n))
        return ctx
    return setup


def test_promotion_gates_on_dev_and_refuses_a_model_below_legacy(run):
    from qp_core.training.assess import stage_promote

    # golden says sft2 is far ahead; dev says both stages are far behind the legacy snapshot
    ctx = run(golden={"legacy": 60, "sft1": 70, "sft2": 100}, dev={"legacy": 90, "sft1": 40, "sft2": 45})
    info = stage_promote(ctx)
    assert info["stage"] == "sft2" and not info["promoted"]
    assert "dev split" in info["gate"][0] and "measurably worse" in info["gate"][0]
    assert info["dev_comparison"]["overall"]["hi"] < 0
    assert registry.production() is None  # the candidate stays registered, not live
    assert registry.get(info["version"]).stage == "sft2"


def test_the_best_stage_on_dev_is_promoted_not_the_last(run):
    from qp_core.training.assess import stage_promote

    ctx = run(golden={"legacy": 60, "sft1": 80, "sft2": 90}, dev={"legacy": 60, "sft1": 95, "sft2": 70})
    info = stage_promote(ctx)
    assert info["stage"] == "sft1" and info["promoted"]
    assert any("stage 2" in n and "worse" in n for n in info["stage_choice"])
    assert registry.production().version == info["version"]


def test_a_below_gate_candidate_is_published_without_activation(tmp_path, monkeypatch):
    """What `qp demo` does with a bootstrap below the gate: the run targets the candidate's own namespace
    and its publish step never flips the pointer; production runs are unchanged."""
    from qp_core.nearline import steps

    monkeypatch.setenv("QP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QP_REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens: active namespace unknown
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    rec = registry.register(model, {"profile": "tiny", "rules_mode": "compact", "rules_version": "r1"})
    with pytest.raises(steps.NoProductionModel):
        steps.resolve_target()
    monkeypatch.setenv(steps.CANDIDATE_ENV, rec.version)
    target = steps.resolve_target()
    assert target.candidate and target.model_version == rec.version
    assert "--no-activate" in steps._publish_args("2026-11-07", target, None)
    assert steps.Target.from_dict(target.to_dict()) == target  # survives the DAG's XCom round trip
    monkeypatch.delenv(steps.CANDIDATE_ENV)
    registry.promote(rec.version, force=True)
    prod = steps.resolve_target()
    assert not prod.candidate and "--no-activate" not in steps._publish_args("2026-11-07", prod, None)
