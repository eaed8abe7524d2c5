"""Training chain: completion-only masking, the stage-1 mixing ratio, the GRPO filter's selection rule,
rewards = metrics, the report writer, and (slow) the CI-sized chain end to end on the small world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qp_core.training.data import mix_aux, recent_rows, unified_example
from qp_core.training.grpo_filter import select_target

LABEL = json.dumps(
    {"entities": [{"text": "雅诗兰黛", "type": "brand"}], "segments": ["雅诗兰黛", "粉底液"], "weights": [3, 2],
     "category": ["美妆/彩妆"], "intent_desc": "想买粉底液"},
    ensure_ascii=False, separators=(",", ":"),
)


# ----------------------------------------------------------------------------------- masking (TRL SFT)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from qp_core.training.modeling import create_base_model

    out = tmp_path_factory.mktemp("base") / "model"
    texts = ["雅诗兰黛粉底液", "兰蔻小黑瓶", LABEL, "粉底液推荐", "平价好用"] * 5
    return create_base_model("tiny", texts, out, seed=0)


def test_completion_only_loss_masks_exactly_the_prompt(base_model, tmp_path):
    from qp_core.training.config import load_training_settings
    from qp_core.training.sft import make_sft_trainer

    rows = [
        {"query": "雅诗兰黛粉底液", "label": LABEL, "history": ["粉底液推荐"], "notes": ["平价好用"]},
        {"query": "兰蔻", "label": LABEL, "history": [], "notes": []},  # shorter prompt -> padding in the batch
    ]
    examples = [unified_example(r, "compact") for r in rows]
    st = load_training_settings("ci").sft1
    trainer = make_sft_trainer(base_model, examples, tmp_path / "sft", st)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, ex in enumerate(examples):
        enc = tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True)
        prompt_ids = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        mask = batch["attention_mask"][i].tolist()
        real = [j for j, m in enumerate(mask) if m]  # positions of real (non-pad) tokens
        n_prompt = len(prompt_ids)
        assert [ids[j] for j in real[:n_prompt]] == prompt_ids  # the row starts with exactly the prompt
        assert all(labels[j] == -100 for j in real[:n_prompt])  # every prompt token masked
        assert all(labels[j] == ids[j] for j in real[n_prompt:])  # every completion token trained on
        assert all(labels[j] == -100 for j, m in enumerate(mask) if not m)  # padding masked
        completion = tok.decode([ids[j] for j in real[n_prompt:]])
        assert completion.startswith(ex["completion"][0]["content"])  # label = the unified JSON (+ end of turn)
        assert "<|im_end|>" in completion


# ----------------------------------------------------------------------------------------- mixing ratio


def _ex(source: str, i: int) -> dict:
    return {"prompt": [], "completion": [], "source": source, "query": f"{source}{i}"}


@pytest.mark.parametrize("lam, n_unified, expected_aux", [(0.0, 100, 0), (0.3, 100, 30), (0.5, 40, 20), (2.0, 10, 20)])
def test_mixing_ratio_is_a_sampling_fraction(lam, n_unified, expected_aux):
    unified = [_ex("unified", i) for i in range(n_unified)]
    aux = {t: [_ex(f"aux:{t}", i) for i in range(50)] for t in ("ner", "seg", "tw", "taxonomy", "intent")}
    mixed = mix_aux(unified, aux, lam, seed=1)
    sources = [e["source"] for e in mixed]
    assert sources.count("unified") == n_unified  # every unified row kept exactly once
    n_aux = sum(s.startswith("aux:") for s in sources)
    assert n_aux == expected_aux
    per_task = [sum(s == f"aux:{t}" for s in sources) for t in aux]
    assert max(per_task) - min(per_task) <= 1  # equal share per sub-task
    assert mix_aux(unified, aux, lam, seed=1) == mixed  # deterministic given the seed


def test_recent_rows_window():
    rows = [{"dt": d} for d in ("2026-10-01", "2026-10-20", "2026-10-25", "2026-10-31")]
    assert [r["dt"] for r in recent_rows(rows, 7)] == ["2026-10-25", "2026-10-31"]
    assert len(recent_rows(rows, 365)) == 4


# -------------------------------------------------------------------------------------- filter rule

V, E = 0.05, 0.02


@pytest.mark.parametrize(
    "rewards, target",
    [
        ({"ner": [1, 0, 1, 0], "seg": [1, 1, 1, 1], "tw": [.5, .5, .5, .5], "taxonomy": [1, 1, 1, 1]}, "ner"),
        ({"ner": [1, 1, 1, 1], "seg": [1, 1, 1, 1], "tw": [.2, .8, .5, .5], "taxonomy": [0, 0, 0, 0]}, "tw"),
        ({"ner": [1, 1, 1, 1], "seg": [1, 1, 1, 1], "tw": [1, 1, 1, 1], "taxonomy": [1, 1, 1, 1]}, None),  # no signal
        ({"ner": [1, 0, 1, 0], "seg": [1, 0, 1, 1], "tw": [1, 1, 1, 1], "taxonomy": [1, 1, 1, 1]}, None),  # two vary
        # target varies, another wobbles above eps but below the vary threshold: not consistent -> dropped
        ({"ner": [1, 0, 1, 0], "seg": [1, .95, 1, .95], "tw": [1, 1, 1, 1], "taxonomy": [1, 1, 1, 1]}, None),
        # another wobbles within eps: kept
        ({"ner": [1, 0, 1, 0], "seg": [1, .99, 1, .99], "tw": [1, 1, 1, 1], "taxonomy": [1, 1, 1, 1]}, "ner"),
        # intent/format are not part of the rule
        ({"ner": [1, 1, 1, 1], "seg": [1, 1, 1, 1], "tw": [1, 1, 1, 1], "taxonomy": [1, 0, 1, 1],
          "intent": [.1, .9, .3, .5], "format": [1, 0, 1, 1]}, "taxonomy"),
    ],
)
def test_filter_selection_rule(rewards, target):
    assert select_target(rewards, vary_threshold=V, consistency_eps=E) == target


def test_filter_threshold_is_strict():
    # std of [0.6, 0.4] is 0.1: varies at threshold 0.05, not at 0.1
    r = {"ner": [.6, .4], "seg": [1, 1], "tw": [1, 1], "taxonomy": [1, 1]}
    assert select_target(r, vary_threshold=0.05, consistency_eps=E) == "ner"
    assert select_target(r, vary_threshold=0.1, consistency_eps=E) is None


# ------------------------------------------------------------------------------------------- report


def test_report_files_and_table(tmp_path):
    from qp_core.training.report import write_report

    rows = [
        {"name": "legacy pipeline", "overall": 60.0, "ner_f1": 50.0, "seg_f1": 80.0, "tw_f1": 40.0, "taxonomy": 70.0,
         "valid_rate": 1.0, "intent_chrf": 30.0},
        {"name": "stage 2 SFT (recent)", "overall": 70.0, "ner_f1": 60.0, "seg_f1": 85.0, "tw_f1": 55.0,
         "taxonomy": 80.0, "valid_rate": 0.99, "intent_chrf": 40.0},
    ]
    hist = {"stage 1": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]}
    out = write_report(tmp_path, rows, histories=hist, stage_times={"sft1": 12.0})
    assert json.loads(out["json"].read_text()) == rows
    md = out["md"].read_text()
    assert "| stage 2 SFT (recent) | **70.00** |" in md and "99.00" in md
    assert out["loss_png"].stat().st_size > 1000 and out["metrics_png"].stat().st_size > 1000


# ------------------------------------------------------------------------------- CI-sized chain (slow)


@pytest.fixture
def ci_home(tmp_path, monkeypatch, small_world):
    """A fresh QP_HOME whose lake holds a copy of the small world's raw datasets."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(small_world / "raw", home / "lake" / "raw")
    monkeypatch.setenv("QP_HOME", str(home))
    monkeypatch.delenv("QP_LAKE_ROOT", raising=False)
    monkeypatch.delenv("QP_REGISTRY", raising=False)
    return home


@pytest.mark.slow
def test_ci_chain_end_to_end(ci_home, spark):
    from qp_core import registry
    from qp_core.metrics import evaluate
    from qp_core.normalize import normalize_query
    from qp_core.training.run import STAGES, make_context
    from qp_core.training.stages import run_chain, run_stage
    from qp_core.training.data import read_dataset

    ctx = make_context("ci")
    info = run_chain(ctx, aux={"spark": spark})
    assert list(info) == list(STAGES)

    # aux: one partition per task, golden queries excluded
    aux = read_dataset("training/aux")
    assert {r["task"] for r in aux} == set(ctx.settings.tasks)
    golden = {normalize_query(r["query"]) for r in read_dataset("raw/golden")}
    assert not golden & {r["query"] for r in aux}
    assert all(json.loads(r["prompt"])[0]["role"] == "system" and r["completion"].startswith("{") for r in aux)

    # stage 1 mixing: round(λ·N_unified) aux rows
    s1 = info["sft1"]
    assert s1["aux_rows"] == round(ctx.settings.sft1.lambda_aux * s1["unified_rows"])
    assert info["sft2"]["rows"] <= s1["unified_rows"]

    # report rows: name + every key of metrics.evaluate
    # report: the fair baseline (legacy refitted on the training rows) first, then the stale snapshot
    rows = json.loads(Path(info["evaluate"]["report"]["json"]).read_text())
    names = [r["name"] for r in rows]
    assert "fair baseline" in names[0] and "snapshot" in names[1] and any("stage 2" in n for n in names)
    keys = set(evaluate([None], [{"query": "x", **json.loads(read_dataset("raw/golden")[0]["label"])}]))
    assert all(keys <= set(r) and "per_row" not in r for r in rows)
    md = Path(info["evaluate"]["report"]["md"]).read_text()
    assert "Paired comparisons" in md and "95%" in md and "Dev split" in md and "traffic-weighted" in md
    assert "qp train ablation context-off --run-id" in md  # the context ablation is one command away
    tables = json.loads(Path(info["evaluate"]["report"]["tables_json"]).read_text())
    cmp = next(v for k, v in tables.items() if k.startswith("Paired"))
    assert any("fair baseline" in r["name"] for r in cmp) and all("[" in r["Overall"] for r in cmp)

    # registry: the best stage on dev registered with its versions and metrics; a CI-sized model is far
    # below the legacy baseline, so the first promotion (gated on dev against legacy) must be refused
    rec = registry.get(info["promote"]["version"])
    assert rec.profile == "tiny" and rec.rules_mode == "compact" and rec.rules_version and rec.metrics
    assert rec.stage == info["promote"]["stage"] and "per_row" not in rec.metrics
    assert rec.data_versions["annotations"] != "missing" and (Path(rec.path) / "config.json").exists()
    assert info["promote"]["promoted"] is False and "dev split" in " ".join(info["promote"]["gate"])
    assert registry.production() is None
    registry.promote(rec.version, force=True)
    assert registry.production().version == rec.version

    # resumable: a finished stage is skipped on rerun
    again = run_stage(make_context("ci"), "sft1")
    assert again["wall_s"] == info["sft1"]["wall_s"]


def test_grpo_trains_with_the_metric_rewards(base_model, tmp_path):
    """TRL GRPOTrainer on CPU with one reward per sub-task + format, from (and KL-anchored to) a given model."""
    from qp_core.training.config import load_training_settings
    from qp_core.training.grpo import train_grpo

    g = load_training_settings("ci").grpo.model_copy(update={"max_steps": 1, "save_steps": 1})
    rows = [{"query": "雅诗兰黛粉底液", "label": LABEL, "history": [], "notes": [], "target": "ner"},
            {"query": "兰蔻", "label": LABEL.replace("雅诗兰黛粉底液", "兰蔻"), "history": [], "notes": [], "target": "seg"}]
    res = train_grpo(base_model, rows, tmp_path / "grpo", g, rules_mode="compact", threads=1)
    assert (res.model_dir / "config.json").exists()
    assert res.extra["steps"] == 1 and res.extra["multi_objective_aggregation"] == "sum_then_normalize"
    assert res.extra["query_grammar_rollouts"] is True  # rollouts decode under each query's grammar
    assert len(res.extra["reward_funcs"]) == len(res.extra["reward_weights"]) >= 5
    logged = [h for h in res.log_history if "reward" in h]
    assert logged and all(k in logged[0] for k in ("kl", "reward_std"))


@pytest.mark.parametrize("pred", [
    json.loads(LABEL),  # perfect
    {**json.loads(LABEL), "entities": [{"text": "雅诗兰黛", "type": "product_series"}]},  # wrong type
    {**json.loads(LABEL), "segments": ["雅诗", "兰黛", "粉底液"], "weights": [3, 3, 2]},  # wrong split
    {**json.loads(LABEL), "weights": [2, 2]},  # wrong weights
    {**json.loads(LABEL), "category": ["美食/探店", "美妆/彩妆"]},  # wrong top-1, half the label set
    {**json.loads(LABEL), "weights": [3]},  # breaks the contract: parsed as empty by both
])
def test_rewards_equal_metrics_on_the_same_input(pred):
    """What GRPO optimises is what the report measures: per-query rewards × 100 = metrics on that query."""
    from qp_core.metrics import evaluate
    from qp_core.rewards import per_task_rewards, reward_funcs
    from qp_core.parse import parse_output

    query = "雅诗兰黛粉底液"
    ref = {**json.loads(LABEL), "query": query}
    text = json.dumps(pred, ensure_ascii=False)
    rewards = per_task_rewards(text, LABEL, query)
    m = evaluate([parse_output(text, query).result], [ref])  # as the chain's evaluation scores outputs
    for task, key in (("ner", "ner_f1"), ("seg", "seg_f1"), ("tw", "tw_f1"), ("taxonomy", "taxonomy")):
        assert rewards[task] * 100 == pytest.approx(m[key], abs=1e-6), task
    # the TRL-signature functions GRPOTrainer calls give the same numbers
    funcs = reward_funcs()
    completions = [[{"role": "assistant", "content": text}]]
    for task in ("ner", "seg", "tw", "taxonomy"):
        assert funcs[task](completions, label=[LABEL], query=[query])[0] == pytest.approx(rewards[task])
