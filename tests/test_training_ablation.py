"""Controls next to a finished run (qp_core.training.ablation): their settings and their paired comparisons."""

from __future__ import annotations

import json
import re

import pytest

from qp_core.training.ablation import (
    CONTROLS,
    ablation_report,
    control_comparison,
    control_run_id,
    isolated_comparison,
    isolated_examples,
)
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


# ------------------------------------------------------------------------------ Table 2: isolated models
ISOLATED_TASKS = ("ner", "seg", "tw", "taxonomy")


@pytest.fixture
def iso_ctx(small_world, monkeypatch, tmp_path):
    """A run with pseudo-labels in stage 1 (λ = 0.3) and context on."""
    monkeypatch.setenv("QP_LAKE_ROOT", str(small_world))
    monkeypatch.setenv("QP_HOME", str(tmp_path / "home"))
    ctx = make_context("ci", run_id="iso", overrides={"sft1": {"lambda_aux": 0.3}})
    assert ctx.settings.context
    return ctx


def _aux_pool():
    from qp_core.prompt import TASKS, build_task_messages

    return {t: [{"prompt": build_task_messages(t, f"{t}查询{i}"), "query": f"{t}查询{i}", "label": "",
                 "completion": [{"role": "assistant", "content": "{}"}], "source": f"aux:{t}"} for i in range(30)]
            for t in TASKS}


def test_isolated_models_get_the_unified_prompt_context_and_pseudo_labels(iso_ctx):
    """Each isolated example has the unified example's rules and user JSON (query, history, notes); each
    isolated mix holds exactly the pseudo-labelled rows of its task that the unified stage-1 mix holds."""
    from qp_core.prompt import load_prompt_settings, task_target
    from qp_core.rules import load_rules
    from qp_core.training.run import training_annotations
    from qp_core.training.stages import sft1_examples

    rows = list({r["query"]: r for r in training_annotations(iso_ctx)}.values())[:60]  # one row per query
    assert sum(bool(r.get("history")) and bool(r.get("notes")) for r in rows) >= 5
    aux = _aux_pool()
    unified = sft1_examples(iso_ctx, rows, aux)
    by_query = {e["query"]: e for e in unified if e["source"] == "unified"}
    rules = load_rules(iso_ctx.rules_mode)
    aux_counts = set()
    for task in ISOLATED_TASKS:
        mix = isolated_examples(iso_ctx, task, rows, aux)
        own = [e for e in mix if e["source"] == f"isolated:{task}"]
        assert len(own) == len(rows)
        for e in own:
            u = by_query[e["query"]]
            assert e["prompt"][1] == u["prompt"][1]  # same user JSON: query, history and notes, same caps
            assert e["prompt"][0]["content"].endswith(rules) and u["prompt"][0]["content"].endswith(rules)
            assert e["completion"][0]["content"] == task_target(task, json.loads(u["label"]))
        keys = load_prompt_settings().mode(iso_ctx.rules_mode).keys
        payloads = [json.loads(e["prompt"][1]["content"]) for e in own]
        with_context = [p for p in payloads if p[keys.history] and p[keys.notes]]
        assert len(with_context) >= 5, "the context reaches the isolated prompts"
        pseudo = [e for e in mix if e["source"].startswith("aux:")]
        assert {e["source"] for e in pseudo} == {f"aux:{task}"}
        theirs = [e for e in unified if e["source"] == f"aux:{task}"]
        assert sorted(map(id, pseudo)) == sorted(map(id, theirs)), task  # the very same rows, as many
        assert len(mix) == len(rows) + len(theirs)
        aux_counts.add(len(pseudo))
    assert aux_counts == {3, 4}  # round(0.3 · 60) = 18 over 5 aux tasks: 4,4,4,3,3 (intent first, sorted)


def test_isolated_evaluation_decodes_under_task_grammars_and_pairs_with_the_unified_rows(iso_ctx, monkeypatch):
    """The fake task models answer the gold target (the seg model: one segment, so Seg < 100); the result's
    per_row takes each task's columns from that task's model and reproduces every task score."""
    from qp_core.grammar import task_grammar
    from qp_core.prompt import task_target
    from qp_core.training import generate
    from qp_core.training.compare import point_scores
    from qp_core.training.data import isolated_prompt
    from qp_core.training.evaluate import evaluate_task_models_separately

    rows = golden_rows(iso_ctx.settings.eval.limit, seed=iso_ctx.settings.seed)[:30]
    seen = {}

    def fake_generate(model, prompts, *, grammars=None, **kw):
        task = model
        seen[task] = (prompts, grammars)
        out = []
        for r in rows:
            label = json.loads(r["label"])
            if task == "seg":
                label["segments"] = ["".join(label["segments"])]
            out.append([task_target(task, label)])
        return out

    monkeypatch.setattr(generate, "load_for_generation", lambda model_dir, bf16: model_dir)
    monkeypatch.setattr(generate, "generate_texts", fake_generate)
    m = evaluate_task_models_separately({t: t for t in ISOLATED_TASKS}, rows, rules_mode=iso_ctx.rules_mode)
    for task in ISOLATED_TASKS:
        prompts, grammars = seen[task]
        assert prompts == [isolated_prompt(task, r, iso_ctx.rules_mode, True) for r in rows]
        assert grammars == [task_grammar(r["query"], task) for r in rows]
    assert m["ner_f1"] == m["tw_f1"] == m["taxonomy"] == 100.0 and m["seg_f1"] < 90
    assert len(m["per_row"]) == len(rows)
    keys = ("overall", "ner_f1", "seg_f1", "tw_f1", "taxonomy")
    assert point_scores(m["per_row"]) == pytest.approx({k: m[k] for k in keys})

    # the ablation report pairs it with the unified stage 1 on the same rows
    _write_eval(iso_ctx, "sft1", [json.loads(r["label"]) for r in rows], rows)
    note = isolated_comparison(iso_ctx, m)[0]
    assert "TW +0.00 [+0.00, +0.00]" in note and re.search(r"Seg \+[\d.]+ \[\+[\d.]+", note), note
