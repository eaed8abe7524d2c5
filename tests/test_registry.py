"""Registry and promotion gate: decisions on constructed metrics, pointer semantics, rollback."""

from __future__ import annotations

import json

import pytest

from qp_core import registry
from qp_core.registry import GateSettings, RegistryError, gate

PROD = {"overall": 80.0, "ner_f1": 80.0, "seg_f1": 90.0, "tw_f1": 65.0, "taxonomy": 85.0}
S = GateSettings(tolerance=0.5, max_subtask_drop=2.0)


def _m(**changes):
    out = dict(PROD)
    out.update(changes)
    return out


@pytest.mark.parametrize(
    "candidate, ok",
    [
        (_m(overall=81.0, ner_f1=82.0), True),  # better everywhere
        (_m(overall=79.6), True),  # within tolerance 0.5
        (_m(overall=79.4), False),  # beyond tolerance
        (_m(overall=85.0, tw_f1=62.9), False),  # overall up but TW falls 2.1 > δ
        (_m(overall=85.0, tw_f1=63.0), True),  # falls exactly δ: allowed
        (_m(overall=80.0, taxonomy=82.0, seg_f1=92.0), False),  # taxonomy -3
    ],
)
def test_gate_decisions(candidate, ok):
    decision = gate(candidate, PROD, S)
    assert decision.ok is ok, decision.reasons
    assert decision.reasons


def test_gate_without_production_passes():
    assert gate({"overall": 1.0}, None, S).ok


def test_gate_reasons_name_the_failing_subtask():
    decision = gate(_m(overall=70.0, ner_f1=70.0), PROD, S)
    assert not decision.ok
    text = " ".join(decision.reasons)
    assert "overall" in text and "ner_f1" in text and "seg_f1" not in text


def _model_dir(tmp_path, name="m"):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "checkpoint-5").mkdir()  # trainer state is not copied into the registry
    return d


def test_register_get_list_promote_rollback(tmp_path):
    root = tmp_path / "reg"
    assert registry.production(root=root) is None
    a = registry.register(
        _model_dir(tmp_path, "a"),
        {"profile": "tiny", "rules_mode": "compact", "rules_version": "r1", "prompt_version": "p1",
         "data_versions": {"annotations": "2026-11-01"}, "metrics": PROD, "stage": "grpo"},
        root=root,
    )
    assert (root / "models" / a.version / "config.json").exists()
    assert not (root / "models" / a.version / "checkpoint-5").exists()
    assert registry.get(a.version, root=root).rules_mode == "compact"
    meta = json.loads((root / "models" / a.version / "meta.json").read_text())
    assert meta["data_versions"] == {"annotations": "2026-11-01"} and meta["created"]

    registry.promote(a.version, settings=S, root=root)
    assert registry.production(root=root).version == a.version

    worse = registry.register(_model_dir(tmp_path, "b"), {"profile": "tiny", "metrics": _m(overall=70.0)}, root=root)
    with pytest.raises(RegistryError, match="refused"):
        registry.promote(worse.version, settings=S, root=root)
    assert registry.production(root=root).version == a.version  # pointer untouched

    better = registry.register(_model_dir(tmp_path, "c"), {"profile": "tiny", "metrics": _m(overall=82.0)}, root=root)
    registry.promote(better.version, settings=S, root=root)
    assert registry.production(root=root).version == better.version
    assert [r.version for r in registry.list(root=root)] == [a.version, worse.version, better.version]

    assert registry.rollback(root=root).version == a.version
    assert registry.production(root=root).version == a.version

    registry.promote(worse.version, force=True, settings=S, root=root)
    ptr = json.loads((root / "production.json").read_text())
    assert ptr["version"] == worse.version and ptr["forced"] is True


def test_unknown_version(tmp_path):
    with pytest.raises(RegistryError):
        registry.get("nope", root=tmp_path)


def test_first_promotion_is_gated_against_the_legacy_baseline(tmp_path):
    root = tmp_path / "reg"
    weak = registry.register(_model_dir(tmp_path, "w"), {"profile": "tiny", "metrics": _m(overall=10.0)}, root=root)
    with pytest.raises(RegistryError, match="legacy baseline"):
        registry.promote(weak.version, settings=S, root=root, baseline=PROD)
    assert registry.production(root=root) is None
    # without a baseline (or with first_against_legacy off) the first model passes
    off = GateSettings(tolerance=0.5, max_subtask_drop=2.0, first_against_legacy=False)
    registry.promote(weak.version, settings=off, root=root, baseline=PROD)
    assert registry.production(root=root).version == weak.version


def test_gate_compares_served_metrics_and_requires_valid_json():
    """Served = the model's valid outputs + legacy fallback elsewhere (what the KV store would hold)."""
    served_better = {**_m(overall=40.0, ner_f1=30.0), "valid_rate": 0.9, "served": _m(overall=83.0, ner_f1=84.0)}
    assert gate(served_better, PROD, S).ok
    served_worse = {**_m(overall=99.0), "valid_rate": 0.9, "served": _m(overall=78.0)}
    assert not gate(served_worse, PROD, S).ok
    # a model whose outputs mostly fail validation is refused even if its served metrics (mostly
    # fallback) look fine: it would trip the nearline quality gate
    mostly_fallback = {**_m(overall=90.0), "valid_rate": 0.3, "served": _m(overall=81.0)}
    decision = gate(mostly_fallback, PROD, S)
    assert not decision.ok and any("valid JSON rate 0.30" in r for r in decision.reasons)
