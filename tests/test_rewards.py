"""GRPO rewards: equal to the evaluation metric on the same single sample, called the way TRL 1.16 calls them."""

from __future__ import annotations

import json
import pickle

import pytest

from qp_core.config import ConfigError
from qp_core.metrics import TASKS, evaluate
from qp_core.parse import parse_output
from qp_core.rewards import (
    REWARD_ORDER,
    RewardSettings,
    completion_text,
    format_reward,
    intent_reward,
    load_reward_settings,
    ner_reward,
    per_task_rewards,
    reward_funcs,
    reward_funcs_and_weights,
    seg_reward,
    taxonomy_reward,
    total_reward,
    tw_reward,
)
from qp_core.schema import dump_unified

QUERY = "Dior 口红 dior 香水"
LABEL = {
    "entities": [
        {"text": "dior", "type": "brand"},
        {"text": "口红", "type": "product_type"},
        {"text": "dior", "type": "brand"},
        {"text": "香水", "type": "product_type"},
    ],
    "segments": ["dior", "口红", "dior", "香水"],
    "weights": [3, 2, 3, 2],
    "category": ["美妆/彩妆", "美妆/护肤"],
    "intent_desc": "比较迪奥的口红和香水",
}
LABEL_JSON = dump_unified(LABEL)


def _variant(**changes):
    return dump_unified({**LABEL, **changes})


COMPLETIONS = [
    LABEL_JSON,  # perfect
    "```json\n" + _variant(intent_desc="想买迪奥口红") + "\n```",  # repaired, intent differs
    _variant(entities=[{"text": "dior", "type": "person"}, {"text": "香水", "type": "product_type"}]),
    _variant(segments=["dior口红", "dior", "香水"], weights=[3, 3, 1]),
    _variant(category=["美妆/护肤", "美妆/彩妆", "时尚/穿搭"]),
    _variant(weights=[3, 2, 3]),  # valid JSON, fails validation -> empty prediction
    LABEL_JSON[:40],  # truncated
    "",
]
REWARD_FUNCS = {"ner": ner_reward, "seg": seg_reward, "tw": tw_reward, "taxonomy": taxonomy_reward, "intent": intent_reward}
METRIC_KEYS = {"ner": "ner_f1", "seg": "seg_f1", "tw": "tw_f1", "taxonomy": "taxonomy", "intent": "intent_chrf"}


def _trl_kwargs(n, **columns):
    """The keyword arguments GRPOTrainer._calculate_rewards passes besides the dataset columns."""
    return dict(prompts=[[{"role": "user", "content": QUERY}]] * n, completion_ids=[[1, 2]] * n,
                trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **columns)


def test_each_reward_equals_the_metric_on_the_same_single_sample():
    n = len(COMPLETIONS)
    kwargs = _trl_kwargs(n, label=[LABEL_JSON] * n, query=[QUERY] * n, target=["ner"] * n)
    rewards = {task: fn(completions=COMPLETIONS, **kwargs) for task, fn in REWARD_FUNCS.items()}
    seen = set()
    for i, text in enumerate(COMPLETIONS):
        metrics = evaluate([parse_output(text, QUERY).result], [dict(LABEL, query=QUERY)])
        for task in TASKS:
            assert rewards[task][i] == pytest.approx(metrics[METRIC_KEYS[task]] / 100), (i, task)
            seen.add(round(rewards[task][i], 6))
    assert rewards["ner"][0] == 1.0 and rewards["ner"][5] == 0.0 and 0 < rewards["ner"][2] < 1
    assert len(seen) > 5  # the cases really differ


def test_conversational_completions_and_reference_forms():
    msgs = [[{"role": "assistant", "content": text}] for text in COMPLETIONS[:4]]
    plain = ner_reward(completions=COMPLETIONS[:4], label=[LABEL_JSON] * 4, query=[QUERY] * 4)
    assert ner_reward(completions=msgs, **_trl_kwargs(4, label=[LABEL_JSON] * 4, query=[QUERY] * 4)) == plain
    # `reference` column instead of `label`, dict instead of JSON, query taken from the reference dict
    assert ner_reward(completions=COMPLETIONS[:4], reference=[dict(LABEL, query=QUERY)] * 4) == plain
    # rows without a reference get None, which TRL excludes from that reward
    assert seg_reward(completions=COMPLETIONS[:2], label=[None, LABEL_JSON], query=[QUERY] * 2)[0] is None
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "ab"}, {"type": "image"}]}]) == "ab"
    assert completion_text(None) is None
    with pytest.raises(ValueError, match="2 values for 3 completions"):
        tw_reward(completions=COMPLETIONS[:3], label=[LABEL_JSON] * 2, query=[QUERY] * 3)
    with pytest.raises(ValueError, match="no query"):
        tw_reward(completions=COMPLETIONS[:1], label=[LABEL_JSON])


def test_format_reward_full_partial_and_zero():
    texts = [LABEL_JSON, COMPLETIONS[1], COMPLETIONS[5], COMPLETIONS[6], "", None, "[1,2]"]
    got = format_reward(completions=texts, query=[QUERY] * len(texts), schema_fail_credit=0.2)
    assert got == [1.0, 1.0, 0.2, 0.0, 0.0, 0.0, 0.0]
    assert format_reward(completions=texts[:3], query=[QUERY] * 3, schema_fail_credit=0.0) == [1.0, 1.0, 0.0]
    # the query can come from a reference dict; without any query a JSON object only earns the partial credit
    assert format_reward(completions=[LABEL_JSON], reference=[dict(LABEL, query=QUERY)], schema_fail_credit=0.3) == [1.0]
    assert format_reward(completions=[LABEL_JSON], schema_fail_credit=0.3) == [0.3]


def test_per_task_rewards_for_the_filter_match_the_functions():
    for text in COMPLETIONS:
        r = per_task_rewards(text, LABEL, QUERY, schema_fail_credit=0.2)
        assert set(r) == set(TASKS) | {"format"}
        for task, fn in REWARD_FUNCS.items():
            assert r[task] == fn(completions=[text], label=[LABEL_JSON], query=[QUERY])[0]
        assert r["format"] == format_reward(completions=[text], query=[QUERY], schema_fail_credit=0.2)[0]
    assert per_task_rewards(LABEL_JSON, dict(LABEL, query=QUERY))["tw"] == 1.0
    with pytest.raises(ValueError):
        per_task_rewards(LABEL_JSON, None, QUERY)


def test_funcs_and_weights_from_config_feed_trl():
    from trl.trainer.utils import get_callable_name  # how GRPOTrainer names rewards in its logs (slow import)

    settings = load_reward_settings()
    funcs, weights = reward_funcs_and_weights(settings)
    names = [get_callable_name(f) for f in funcs]
    assert names == [f"{n}_reward" for n in REWARD_ORDER if settings.weights.get(n, 0) > 0]
    assert weights == [settings.weights[n] for n in REWARD_ORDER if settings.weights.get(n, 0) > 0]
    assert [f.__name__ for f in funcs] == names
    assert [f.__name__ for f in pickle.loads(pickle.dumps(funcs))] == names  # TRL may ship them to workers
    # zero weights drop the reward; an override mapping wins over the file
    funcs, weights = reward_funcs_and_weights(settings, weights={"ner": 2.0, "tw": 0.0, "format": 1.0})
    assert [get_callable_name(f) for f in funcs] == ["format_reward", "ner_reward"] and weights == [1.0, 2.0]
    assert set(reward_funcs(settings)) == set(REWARD_ORDER)
    # the composite reward is exactly the weighted sum TRL forms from these functions and weights
    funcs, weights = reward_funcs_and_weights(settings)
    for text in COMPLETIONS:
        per_func = [f(completions=[text], label=[LABEL_JSON], query=[QUERY])[0] for f in funcs]
        assert total_reward(text, LABEL, QUERY, settings) == pytest.approx(sum(w * r for w, r in zip(weights, per_func)))


def test_settings_are_validated(monkeypatch):
    with pytest.raises(ValueError, match="unknown reward"):
        RewardSettings(weights={"nerr": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        RewardSettings(weights={"ner": -1.0})
    with pytest.raises(ValueError, match="at least one"):
        RewardSettings(weights={"ner": 0.0})
    with pytest.raises(ValueError):
        RewardSettings(schema_fail_credit=1.5)
    monkeypatch.setenv("QP__REWARDS__SCHEMA_FAIL_CREDIT", "0.5")
    assert load_reward_settings().schema_fail_credit == 0.5
    monkeypatch.setenv("QP__REWARDS__WEIGHTS", json.dumps({"ner": -2}))
    with pytest.raises(ConfigError, match="rewards.yaml"):
        load_reward_settings()
