"""The per-query grammar admits exactly the valid outputs: every world label, and no broken copy of one."""

from __future__ import annotations

import json
import random

import pytest

from qp_core.grammar import query_grammar, task_grammar
from qp_core.prompt import task_target
from qp_core.schema import dump_unified, validation_errors

QUERY = "雅诗兰黛 1c1粉底液 色号"
GOOD = {
    "entities": [{"text": "雅诗兰黛", "type": "brand"}, {"text": "1c1", "type": "product_series"}],
    "segments": ["雅诗兰黛", "1c1", "粉底液", "色号"],
    "weights": [3, 3, 2, 1],
    "category": ["美妆/彩妆", "美妆/护肤"],
    "intent_desc": "用户在挑选雅诗兰黛粉底液",
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def accepts(tokenizer, query: str, text: str, task: str | None = None) -> bool:
    """Whether the grammar of ``query`` (``task``'s when given) accepts ``text`` as a complete output, fed as
    the model's tokens."""
    import llguidance
    import llguidance.hf

    grammar = query_grammar(query) if task is None else task_grammar(query, task)
    matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tokenizer),
                                   llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
    return bool(matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False))) and matcher.is_accepting()


def mutate(d, **changes):
    return dump_unified({**json.loads(json.dumps(d)), **changes})


def test_valid_output_is_accepted(tokenizer):
    assert accepts(tokenizer, QUERY, dump_unified(GOOD))
    assert accepts(tokenizer, QUERY, mutate(GOOD, entities=[]))
    assert accepts(tokenizer, QUERY, mutate(GOOD, segments=["雅诗兰黛1c1粉底液色号"], weights=[2]))
    assert accepts(tokenizer, 'a"b\\c', mutate(GOOD, entities=[], segments=['a"b', "\\c"], weights=[1, 1]))


@pytest.mark.parametrize(
    "changes, rule",
    [
        (dict(segments=["雅诗兰黛", "1c1", "粉底", "色号"]), "segments must tile the query"),
        (dict(segments=["雅诗兰黛", "1c1", "粉底液色", "号"], weights=[3, 3, 2]), "one weight per segment"),
        (dict(weights=[3, 3, 2, 1, 0]), "one weight per segment"),
        (dict(weights=[3, 3, 2, 4]), "weights 0..3"),
        (dict(entities=[{"text": "兰蔻", "type": "brand"}]), "entity is a substring"),
        (dict(entities=GOOD["entities"][::-1]), "entities left to right"),
        (dict(entities=[{"text": "雅诗兰黛", "type": "company"}]), "entity type from the ontology"),
        (dict(category=[]), "at least one label"),
        (dict(category=["美妆/香水"]), "label from the taxonomy"),
        (dict(category=["美妆/彩妆", "美妆/护肤", "时尚/穿搭", "美食/探店"]), "at most 3 labels"),
        (dict(intent_desc=""), "intent not empty"),
        (dict(intent_desc="用" * 201), "intent at most 200 chars"),
    ],
)
def test_each_contract_rule_is_enforced(tokenizer, changes, rule):
    text = mutate(GOOD, **changes)
    assert validation_errors(json.loads(text), QUERY), f"test case should break the contract: {rule}"
    assert not accepts(tokenizer, QUERY, text), rule


def test_every_world_label_is_accepted_and_no_corrupted_copy_is(tokenizer, small_world):
    """World labels are valid by construction; a one-character change to a segment or entity never is."""
    import pyarrow.dataset as ds

    rows = ds.dataset(str(small_world / "raw" / "golden"), format="parquet").to_table().to_pylist()[:200]
    rng = random.Random(0)
    for r in rows:
        label = json.loads(r["label"])
        assert accepts(tokenizer, r["query"], dump_unified(label)), r
        bad = json.loads(r["label"])
        field = rng.choice(["segments", "entities"] if bad["entities"] else ["segments"])
        if field == "segments":
            i = rng.randrange(len(bad["segments"]))
            bad["segments"][i] = bad["segments"][i][:-1] + "々"
        else:
            bad["entities"][0]["text"] += "々"
        assert validation_errors(bad, r["query"])
        assert not accepts(tokenizer, r["query"], dump_unified(bad)), bad


# ------------------------------------------------------------------ single-task grammars (Table 2 models)
TASKS = ("ner", "seg", "tw", "taxonomy", "intent")


def test_task_grammar_accepts_the_task_target_of_every_world_label(tokenizer, small_world):
    """A task model's training target (``task_target`` of a valid label) is always admitted by its grammar."""
    import pyarrow.dataset as ds

    rows = ds.dataset(str(small_world / "raw" / "golden"), format="parquet").to_table().to_pylist()[:60]
    for r in rows:
        label = json.loads(r["label"])
        for task in TASKS:
            assert accepts(tokenizer, r["query"], task_target(task, label), task), (task, r)
    for task in TASKS:  # quote and backslash in the query: escaped like the unified output
        target = task_target(task, {**GOOD, "entities": [{"text": 'a"b', "type": "brand"}],
                                    "segments": ['a"b', "\\c"], "weights": [1, 1]})
        assert accepts(tokenizer, 'a"b\\c', target, task), task


@pytest.mark.parametrize(
    "task, changes, rule",
    [
        ("seg", dict(segments=["雅诗兰黛", "1c1", "粉底", "色号"]), "segments must tile the query"),
        ("seg", dict(segments=["雅诗兰黛", "1c1", "粉底液", "色号", "号"]), "segments must tile the query"),
        ("seg", dict(segments=["雅诗兰黛", "1c1", "粉底液", "号号"]), "segments must tile the query"),
        ("tw", dict(segments=["雅诗兰黛", "1c1", "粉底", "色号"]), "segments must tile the query"),
        ("tw", dict(weights=[3, 3, 2]), "one weight per segment"),
        ("tw", dict(weights=[3, 3, 2, 1, 0]), "one weight per segment"),
        ("tw", dict(weights=[3, 3, 2, 4]), "weights 0..3"),
        ("ner", dict(entities=[{"text": "兰蔻", "type": "brand"}]), "entity is a substring"),
        ("ner", dict(entities=GOOD["entities"][::-1]), "entities left to right"),
        ("ner", dict(entities=[{"text": "雅诗兰黛", "type": "company"}]), "entity type from the ontology"),
        ("taxonomy", dict(category=["美妆/香水"]), "label from the taxonomy"),
        ("taxonomy", dict(category=[]), "at least one label"),
        ("taxonomy", dict(category=["美妆/彩妆", "美妆/护肤", "时尚/穿搭", "美食/探店"]), "at most 3 labels"),
    ],
)
def test_task_grammar_enforces_its_task_rules(tokenizer, task, changes, rule):
    assert accepts(tokenizer, QUERY, task_target(task, GOOD), task)
    bad = {**json.loads(json.dumps(GOOD)), **changes}
    assert validation_errors(bad, QUERY), f"test case should break the contract: {rule}"
    assert not accepts(tokenizer, QUERY, task_target(task, bad), task), rule


@pytest.mark.parametrize("task", ["ner", "seg", "tw", "taxonomy"])
def test_task_grammar_admits_only_its_own_fields(tokenizer, task):
    """No other task's object, no unified object: the isolated model answers exactly its target's format."""
    assert not accepts(tokenizer, QUERY, dump_unified(GOOD), task)
    for other in ("ner", "seg", "tw", "taxonomy"):
        if other != task:
            assert not accepts(tokenizer, QUERY, task_target(other, GOOD), task), other


def test_task_grammar_rejects_corrupted_world_labels(tokenizer, small_world):
    """Per task, a one-character slip in a segment, a dropped weight or an unknown label is never admitted."""
    import pyarrow.dataset as ds

    rows = ds.dataset(str(small_world / "raw" / "golden"), format="parquet").to_table().to_pylist()[:60]
    rng = random.Random(1)
    for r in rows:
        label = json.loads(r["label"])
        slipped = json.loads(r["label"])
        i = rng.randrange(len(slipped["segments"]))
        slipped["segments"][i] = slipped["segments"][i][:-1] + "々"
        short = {**label, "weights": label["weights"][:-1]}
        unknown = {**label, "category": ["美妆/香水"]}
        for task, bad in (("seg", slipped), ("tw", slipped), ("tw", short), ("taxonomy", unknown)):
            assert validation_errors(bad, r["query"])
            assert not accepts(tokenizer, r["query"], task_target(task, bad), task), (task, bad)


def test_fields_grammar_rejects_impossible_field_sets():
    from qp_core.grammar import fields_grammar

    for fields in [(), ("weights",), ("category", "entities"), ("segments", "segments")]:
        with pytest.raises(ValueError):
            fields_grammar(QUERY, fields)
    with pytest.raises(ValueError):
        task_grammar(QUERY, "pos")


def test_empty_query_has_no_grammar():
    with pytest.raises(ValueError):
        query_grammar(" \t ")


def test_grammar_compiles_for_any_query_text():
    """Fuzz: whatever characters survive normalisation, the generated Lark is valid (vLLM would fail the batch)."""
    import llguidance

    from qp_core.normalize import compact, normalize_query

    rng = random.Random(7)
    alphabet = list('"\\/|%#{}[]()<>?*+.^$~`\'!@&=:;,-_ \t') + ["雅", "诗", "✨", "🔥", "Ａ", "é", "ß", "İ", "\u3000", "1", "c"]
    checked = 0
    for _ in range(300):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        if not compact(normalize_query(q)):
            continue
        grammar = llguidance.LLMatcher.grammar_from_lark(query_grammar(q))
        assert llguidance.LLMatcher.validate_grammar(grammar) == "", q
        checked += 1
    assert checked > 200


def test_apply_bitmask_masks_exactly_the_disallowed_tokens():
    """The eager replacement of llguidance's torch.compile kernel: bit j of word w allows token 32·w + j."""
    import torch

    from qp_core.grammar import apply_bitmask

    scores = torch.zeros(2, 70)  # vocab 70 > 64 bits of 2 words: tokens 64..69 are never allowed
    bitmask = torch.zeros(2, 2, dtype=torch.int32)
    bitmask[0, 0] = 1 | (1 << 5)  # tokens 0 and 5
    bitmask[0, 1] = -(2**31)  # token 63 (the sign bit)
    bitmask[1] = -1  # everything the mask covers
    apply_bitmask(scores, bitmask)
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [0, 5, 63]
    assert torch.isfinite(scores[1]).nonzero().flatten().tolist() == list(range(64))
