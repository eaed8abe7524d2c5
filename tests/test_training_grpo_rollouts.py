"""GRPO that can learn: the filter on constructed rollouts (Seg/TW coupled, intent out of the rule) and the
query grammar applied to the filter's and GRPOTrainer's rollouts."""

from __future__ import annotations

import json

import pytest

from qp_core.training.grpo_filter import select_prompts, select_target

QUERY = "雅诗兰黛粉底液色号"
REF = {"entities": [{"text": "雅诗兰黛", "type": "brand"}], "segments": ["雅诗兰黛", "粉底液", "色号"],
       "weights": [3, 2, 1], "category": ["美妆/彩妆"], "intent_desc": "想买雅诗兰黛粉底液"}
LABEL = json.dumps(REF, ensure_ascii=False, separators=(",", ":"))


def _text(**changes) -> str:
    return json.dumps({**REF, **changes}, ensure_ascii=False, separators=(",", ":"))


V, E = 0.05, 0.02


def test_seg_and_tw_are_coupled():
    # a segmentation change necessarily moves TW: kept with target seg
    r = {"ner": [1, 1, 1, 1], "seg": [1, .5, 1, .5], "tw": [1, .4, 1, .4], "taxonomy": [1, 1, 1, 1]}
    assert select_target(r, vary_threshold=V, consistency_eps=E) == "seg"
    # TW alone (weights differ on the same boundaries): target tw
    r = {"ner": [1, 1, 1, 1], "seg": [1, 1, 1, 1], "tw": [1, .6, 1, .6], "taxonomy": [1, 1, 1, 1]}
    assert select_target(r, vary_threshold=V, consistency_eps=E) == "tw"
    # TW does not excuse Seg: TW as target with Seg wobbling is still two tasks
    r = {"ner": [1, 1, 1, 1], "seg": [1, .95, 1, .95], "tw": [1, .6, 1, .6], "taxonomy": [1, 1, 1, 1]}
    assert select_target(r, vary_threshold=V, consistency_eps=E) is None
    # Seg with NER varying as well: dropped
    r = {"ner": [1, 0, 1, 0], "seg": [1, .5, 1, .5], "tw": [1, .4, 1, .4], "taxonomy": [1, 1, 1, 1]}
    assert select_target(r, vary_threshold=V, consistency_eps=E) is None


def test_filter_on_constructed_rollouts():
    rows = [{"query": QUERY, "label": LABEL, "id": i} for i in range(5)]
    split = _text(segments=["雅诗兰黛", "粉底液色号"], weights=[3, 2])  # Seg and TW move together
    reweighted = _text(weights=[3, 1, 1])  # TW only
    wrong_type = _text(entities=[{"text": "雅诗兰黛", "type": "product_series"}])  # NER only
    other_intent = _text(intent_desc="完全不同的意图描述")  # intent only: no signal for the rule
    rollouts = [
        [LABEL, split, LABEL, split],
        [LABEL, reweighted, LABEL, reweighted],
        [LABEL, wrong_type, wrong_type, LABEL],
        [LABEL, other_intent, LABEL, other_intent],
        [LABEL, _text(segments=["雅诗兰黛", "粉底液色号"], weights=[3, 2],
                      entities=[{"text": "雅诗兰黛", "type": "product_series"}]), LABEL, LABEL],  # two tasks
    ]
    kept, summary = select_prompts(rows, rollouts, vary_threshold=V, consistency_eps=E)
    assert [(r["id"], r["target"]) for r in kept] == [(0, "seg"), (1, "tw"), (2, "ner")]
    assert summary["outcomes"] == {"kept": 3, "all_consistent": 1, "several_vary": 1, "other_inconsistent": 0}
    assert summary["valid_rollout_fraction"] == 1.0
    assert kept[0]["rollout_rewards"]["tw"][1] < 1.0  # TW did vary with Seg, and was allowed to


# ------------------------------------------------------------------------------- grammar in rollouts


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from qp_core.training.modeling import create_base_model

    out = tmp_path_factory.mktemp("base") / "model"
    return create_base_model("tiny", [QUERY, LABEL, "兰蔻小黑瓶", "粉底液推荐"] * 5, out, seed=0)


def test_filter_rollouts_decode_under_the_query_grammar(base_model):
    """An untrained model: free sampling is never valid JSON, grammar sampling always starts the contract."""
    from qp_core.parse import parse_output
    from qp_core.training.data import unified_prompt
    from qp_core.training.generate import generate_texts
    from qp_core.grammar import query_grammars

    rows = [{"query": QUERY, "label": LABEL}, {"query": "兰蔻小黑瓶", "label": LABEL}]
    prompts = [unified_prompt(r, "compact") for r in rows]
    kw = dict(do_sample=True, num_return_sequences=2, max_new_tokens=160, bf16=False, seed=1)
    free = generate_texts(base_model, prompts, **kw)
    constrained = generate_texts(base_model, prompts, grammars=query_grammars([r["query"] for r in rows]), **kw)
    assert not any(parse_output(t, r["query"]).stage == "ok" for r, outs in zip(rows, free) for t in outs)
    for r, outs in zip(rows, constrained):
        for t in outs:
            assert t.startswith('{"entities":[')
            if t.endswith("}"):  # finished within the budget: valid for its own query
                assert parse_output(t, r["query"]).stage == "ok", t


def test_grpo_trainer_rollouts_use_the_query_grammar(base_model, tmp_path):
    """The TRL rollout_func hook on a real GRPOTrainer: one completion per (repeated) prompt, grammar-shaped."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from qp_core.rewards import reward_funcs_and_weights
    from qp_core.training.config import load_training_settings
    from qp_core.training.data import unified_prompt
    from qp_core.training.generate import grammar_rollout_func
    from qp_core.training.grpo import _prompt_key, grpo_config

    rows = [{"query": QUERY, "label": LABEL}, {"query": "兰蔻小黑瓶", "label": LABEL}]
    data = Dataset.from_list([{"prompt": unified_prompt(r, "compact"), "label": r["label"], "query": r["query"]}
                              for r in rows])
    queries = {_prompt_key(p): q for p, q in zip(data["prompt"], data["query"])}
    g = load_training_settings("ci").grpo.model_copy(update={"max_steps": 1, "max_completion_length": 64})
    funcs, weights = reward_funcs_and_weights()
    tok = AutoTokenizer.from_pretrained(str(base_model))
    tok.padding_side = "left"
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(str(base_model)), reward_funcs=funcs,
                          args=grpo_config(tmp_path, g, weights, bf16=False, seed=0, use_cpu=True),
                          train_dataset=data, processing_class=tok,
                          rollout_func=grammar_rollout_func(lambda p: queries.get(_prompt_key(p))))
    prompts = [data[0]["prompt"]] * 2 + [data[1]["prompt"]] * 2
    out = grammar_rollout_func(lambda p: queries.get(_prompt_key(p)))(prompts, trainer)
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == 4 and out["logprobs"] is None
    for p, ids in zip(prompts, out["prompt_ids"]):
        assert tok.decode(ids) == tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
    for ids in out["completion_ids"]:
        assert 0 < len(ids) <= 64
        assert tok.decode(ids, skip_special_tokens=True).startswith('{"entities":[')
    trainer.train()  # TRL accepts the hook's output end to end
    assert trainer.state.global_step == 1
