"""Controls next to a finished run (qp_core.training.ablation): their settings and their paired comparisons."""

from __future__ import annotations

import json
import re

import pytest

from qp_core.training.ablation import CONTROLS, ablation_report, control_comparison, control_run_id
from qp_core.training.compare import slice_of
from qp_core.training.data import golden_rows
from qp_core.training.evaluate import score
from qp_core.training.run import make_context


@pytest.fixture
def runs(small_world, monkeypatch, tmp_path):
    """A main run and its context-off control on the small world's golden rows."""
    monkeypatch.setenv("QP_LAKE_ROOT", str(small_world))
    monkeypatch.setenv("QP_HOME", str(tmp_path / "home"))
    main = make_context("ci", run_id="main")
    spec = CONTROLS["context-off"]
    control = make_context("ci", run_id=control_run_id(main, "context-off"), overrides=spec["overrides"](main.settings))
    return main, control


def _write_eval(ctx, name, predictions, rows):
    out = ctx.stage_dir("evaluate") / "golden"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(score(predictions, rows)), encoding="utf-8")


def test_controls_change_only_what_they_control():
    from qp_core.training.config import load_training_settings

    s = load_training_settings("tiny")
    step = load_training_settings("tiny", CONTROLS["step-matched"]["overrides"](s))
    assert step.sft1.max_steps == s.sft1.max_steps + s.sft2.max_steps  # equal total steps with stage 1 + 2
    assert step.sft1.lambda_aux == s.sft1.lambda_aux and step.context == s.context
    lam = load_training_settings("tiny", CONTROLS["lambda-0"]["overrides"](s))
    assert lam.sft1.lambda_aux == 0.0 and lam.sft1.max_steps == s.sft1.max_steps  # λ at equal steps
    off = load_training_settings("tiny", CONTROLS["context-off"]["overrides"](s))
    assert off.context is False and off.sft1 == s.sft1 and off.sft2 == s.sft2


def test_context_comparison_credits_the_ambiguous_slice_with_an_interval(runs):
    main, control = runs
    rows = golden_rows(main.settings.eval.limit, seed=main.settings.seed)
    refs = [json.loads(r["label"]) for r in rows]
    ambiguous = [slice_of(r, set()) == "ambiguous" for r in rows]
    assert 5 <= sum(ambiguous) < len(rows)
    # context on: every row right; context off: the ambiguous rows wrong (empty output), the rest right
    _write_eval(main, "sft1", refs, rows)
    _write_eval(control, "sft1", [None if a else ref for a, ref in zip(ambiguous, refs)], rows)

    notes = control_comparison(main, control, "context-off")
    assert len(notes) == 1  # sft2 was not evaluated in either run: no note for it
    m = re.search(r"ambiguous slice \(n=(\d+)\) \+([\d.]+) \[\+([\d.]+), \+([\d.]+)\]", notes[0])
    assert m, notes[0]
    assert int(m.group(1)) == sum(ambiguous) and float(m.group(2)) == pytest.approx(100.0)
    overall = re.search(r"Overall \+([\d.]+) \[\+([\d.]+), \+([\d.]+)\]", notes[0])
    assert overall and float(overall.group(2)) > 0  # the interval excludes zero

    paths = ablation_report(main, None, {"context-off": control})
    md = paths["md"].read_text(encoding="utf-8")
    assert "[context-off]" in md and "(this run)" in md and notes[0] in md


def test_identical_runs_get_no_verdict(runs):
    main, control = runs
    rows = golden_rows(main.settings.eval.limit, seed=main.settings.seed)
    refs = [json.loads(r["label"]) for r in rows]
    for ctx in runs:
        _write_eval(ctx, "sft1", refs, rows)
    note = control_comparison(main, control, "context-off")[0]
    assert "Overall +0.00 [+0.00, +0.00] no clear difference" in note, note
