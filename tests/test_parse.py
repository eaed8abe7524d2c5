"""parse_output: exact behaviour on known cases, then a seeded fuzz run (no hypothesis needed)."""

from __future__ import annotations

import json
import random
import time

import pytest

from qp_core.parse import MAX_INPUT_CHARS, REPAIRS, ParseResult, parse_output
from qp_core.schema import QPResult, dump_unified, entity_types, taxonomy_labels, validation_errors

QUERY = "雅诗兰黛 1C1 粉底液 色号"
GOOD = {
    "entities": [{"text": "雅诗兰黛", "type": "brand"}, {"text": "1c1", "type": "product_series"}],
    "segments": ["雅诗兰黛", "1c1", "粉底液", "色号"],
    "weights": [3, 3, 2, 1],
    "category": ["美妆/彩妆"],
    "intent_desc": "用户在挑选雅诗兰黛粉底液，想了解1c1色号的实际上脸效果",
}
GOOD_TEXT = dump_unified(GOOD)

# A few more valid (query, output) pairs for the fuzz seeds.
SEEDS = [
    (QUERY, GOOD),
    (
        "成都 火锅 推荐",
        {
            "entities": [{"text": "成都", "type": "location"}],
            "segments": ["成都", "火锅", "推荐"],
            "weights": [2, 3, 1],
            "category": ["美食/探店", "旅行/目的地"],
            "intent_desc": "想找成都好吃的火锅店",
        },
    ),
    (
        "iphone 15 pro 续航",
        {
            "entities": [{"text": "iphone", "type": "brand"}, {"text": "15 pro", "type": "product_series"}],
            "segments": ["iphone", "15", "pro", "续航"],
            "weights": [3, 3, 2, 2],
            "category": ["数码/手机"],
            "intent_desc": "了解iPhone 15 Pro的电池续航表现",
        },
    ),
]


def _assert_valid(res: ParseResult, query: str) -> None:
    assert res.error is None and res.stage == "ok"
    assert validation_errors(res.result, query) == []
    QPResult.model_validate(res.result, strict=True)
    assert list(res.result) == ["entities", "segments", "weights", "category", "intent_desc"]


def test_clean_output_parses_without_repairs():
    res = parse_output(GOOD_TEXT, QUERY)
    _assert_valid(res, QUERY)
    assert res.result == GOOD and res.repairs == []


def test_reordered_fields_come_back_in_canonical_order():
    shuffled = {k: GOOD[k] for k in reversed(list(GOOD))}
    res = parse_output(json.dumps(shuffled, ensure_ascii=False, indent=2), QUERY)
    _assert_valid(res, QUERY)
    assert res.repairs == [] and json.dumps(res.result, ensure_ascii=False) == json.dumps(GOOD, ensure_ascii=False)


@pytest.mark.parametrize(
    "text, repairs",
    [
        ("```json\n" + GOOD_TEXT + "\n```", ["code_fence"]),
        ("```\n" + GOOD_TEXT + "\n```\n", ["code_fence"]),
        ("<think>\n\n</think>\n\n" + GOOD_TEXT, ["leading_text"]),
        (GOOD_TEXT + "<|im_end|>", ["trailing_text"]),
        ("<|im_start|>assistant\n" + GOOD_TEXT + "<|im_end|>\n<|endoftext|>", ["leading_text", "trailing_text"]),
        ("Here is the result: " + GOOD_TEXT + " Hope it helps {:}", ["leading_text", "trailing_text"]),
        (GOOD_TEXT.replace("]", ",]").replace("}", " ,\n}"), ["trailing_comma"]),
        ("结果：" + GOOD_TEXT[:-1] + ",}" + "\n完", ["leading_text", "trailing_text", "trailing_comma"]),
        (GOOD_TEXT.encode("utf-8"), ["decode_bytes"]),
        (GOOD_TEXT.replace('"色号"', '" 色号\\t"').replace('"brand"', '"brand "'), ["strip_whitespace"]),
        (GOOD_TEXT.replace('["美妆/彩妆"]', '["美妆/彩妆","美妆/彩妆"]'), ["duplicate_category"]),
    ],
)
def test_unambiguous_repairs_are_applied_and_named(text, repairs):
    res = parse_output(text, QUERY)
    _assert_valid(res, QUERY)
    assert res.repairs == repairs
    assert res.result == GOOD
    assert set(res.repairs) <= set(REPAIRS)


def test_trailing_comma_inside_a_string_is_kept():
    out = dict(GOOD, intent_desc="用户想要 [a, ] 和 {b, }")
    res = parse_output(dump_unified(out)[:-1] + ",}", QUERY)
    _assert_valid(res, QUERY)
    assert res.result["intent_desc"] == "用户想要 [a, ] 和 {b, }" and res.repairs == ["trailing_comma"]


@pytest.mark.parametrize(
    "text, stage, fragment",
    [
        (None, "input", "None"),
        (42, "input", "int"),
        (["x"], "input", "list"),
        (b"\xff\xfe", "input", "UTF-8"),
        ("", "json", "empty"),
        ("   \n", "json", "empty"),
        ("no json here", "json", "no JSON object"),
        (GOOD_TEXT + GOOD_TEXT, "json", "ambiguous: 2"),
        ("a " + GOOD_TEXT + " b " + GOOD_TEXT, "json", "ambiguous: 2"),
        (GOOD_TEXT[:-30], "json", "invalid JSON"),  # truncated generation
        ("[1, 2]", "json", "list"),
        ("[" + GOOD_TEXT + "]", "json", "list"),
        (GOOD_TEXT.replace('"weights":[3,3,2,1]', '"weights":[3,3,2,1],"weights":[1,1,1,1]'), "json", "duplicate key"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[NaN,3,2,1]"), "json", "NaN"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[Infinity,3,2,1]"), "json", "Infinity"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[1e999,3,2,1]"), "json", "overflows"),
        (GOOD_TEXT.replace("[3,3,2,1]", '["3",3,2,1]'), "schema", "weights.0"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[3.0,3,2,1]"), "schema", "weights.0"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[true,3,2,1]"), "schema", "weights.0"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[3,3,2]"), "schema", "3 weights for 4 segments"),
        (GOOD_TEXT.replace("[3,3,2,1]", "[3,3,2,4]"), "schema", "outside 0..3"),
        (GOOD_TEXT.replace('"粉底液",', ""), "schema", "concatenation"),
        (GOOD_TEXT.replace('"product_series"', '"colour"'), "schema", "ontology"),
        (GOOD_TEXT.replace("美妆/彩妆", "美妆"), "schema", "taxonomy"),
        (GOOD_TEXT.replace('"intent_desc"', '"extra":1,"intent_desc"'), "schema", "extra"),
        (GOOD_TEXT.replace("用户在", "用户\\u0000在"), "schema", "U+0000"),
        (GOOD_TEXT.replace("用户在", "用户\\u202e在"), "schema", "U+202E"),
        (GOOD_TEXT.replace("用户在", "用户\n在"), "json", "invalid JSON"),  # raw control char in a string
        ("{" * 60_000, "json", "invalid JSON"),
        ("[" * 60_000, "json", "no JSON object"),
        ('{"entities":' * 5_000, "json", "invalid JSON"),
        ('{"a":[' * 10_000, "json", "recursion"),
        ('{"entities":' + "[" * 900 + "]" * 900 + "}", "schema", "entities.0"),  # deep but decodable
        ("x" * (MAX_INPUT_CHARS + 1), "input", "too long"),
        ("{" * 10_000_000, "input", "too long"),
        (b"{" * 10_000_000, "input", "too long"),
    ],
)
def test_bad_input_gives_a_precise_error_and_never_raises(text, stage, fragment):
    res = parse_output(text, QUERY)
    assert res.result is None and not res.ok
    assert res.stage == stage
    assert fragment in res.error, res.error
    assert "internal parser error" not in res.error


def test_entity_dicts_inside_a_truncated_output_are_not_mistaken_for_the_object():
    res = parse_output(GOOD_TEXT[: GOOD_TEXT.index('"segments"') + 5], QUERY)
    assert res.stage == "json" and "invalid JSON" in res.error


def test_query_must_be_text_and_match():
    assert parse_output(GOOD_TEXT, None).stage == "input"
    assert parse_output(GOOD_TEXT, "另一个 查询").stage == "schema"
    assert "empty after normalisation" in parse_output(GOOD_TEXT, "  ").error


def test_error_messages_are_capped():
    many = dict(GOOD, entities=[{"text": "不存在", "type": "nope"}] * 2000)
    res = parse_output(dump_unified(many), QUERY)
    assert res.stage == "schema" and len(res.error) <= 1_001


def test_pathological_inputs_stay_fast():
    cases = ["{" * 60_000, '{"a":"' * 10_000, ' {"segments": "a", }' * 3_000, "{[" * 30_000, '"' * 65_000]
    for text in cases:
        t0 = time.perf_counter()
        parse_output(text, QUERY)
        assert time.perf_counter() - t0 < 1.0, text[:20]


# ---------------------------------------------------------------- fuzz

_ALPHABET = list('{}[]",:  \n\t\\0123-.eE') + ["true", "null", "NaN", "雅", "色号", "\u0000", "\u202e", "```", "<|im_end|>"]
FUZZ_CASES = 20_000


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, 2, 3, 4, -1, 3.0, 2.5, 10**20])
    if kind == 3:
        return rng.choice(["", " ", "雅诗兰黛", "brand", "美妆/彩妆", "1c1", "色号 ", "\u200b", "x" * 300])
    if kind == 4:
        return rng.choice(list(entity_types()) + list(taxonomy_labels()))
    if kind == 5:
        return rng.choice(["粉底液", "成都", "iphone", "15"])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {rng.choice(["text", "type", "x"]): _random_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return {k: _random_value(rng, depth + 1) for k in rng.sample(["entities", "segments", "weights", "category", "intent_desc"], 3)}


def _mutate_object(rng: random.Random, obj: dict) -> dict:
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(list(obj))
        op = rng.randrange(6)
        if op == 0:
            obj[key] = _random_value(rng)
        elif op == 1:
            del obj[key]
        elif op == 2 and isinstance(obj[key], list) and obj[key]:
            obj[key].pop(rng.randrange(len(obj[key])))
        elif op == 3 and isinstance(obj[key], list):
            obj[key].insert(rng.randrange(len(obj[key]) + 1), _random_value(rng))
        elif op == 4 and isinstance(obj[key], list):
            rng.shuffle(obj[key])
        else:
            obj[rng.choice(["extra", key])] = _random_value(rng)
    return obj


def _mutate_text(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(7)
        i = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(i, len(chars) - 1)]
        elif op == 1:
            chars.insert(i, rng.choice(_ALPHABET))
        elif op == 2 and chars:
            chars[min(i, len(chars) - 1)] = rng.choice(_ALPHABET)
        elif op == 3:
            chars = chars[:i]  # truncation
        elif op == 4:
            chars = list(rng.choice(["```json\n", "<think></think>", "好的：", "{", "["])) + chars
        elif op == 5:
            chars += list(rng.choice(["\n```", "<|im_end|>", "}", ",", "]", text]))
        else:
            j = rng.randrange(len(chars) + 1)
            chars[i:j] = chars[j:i]
    return "".join(chars)


def _fuzz_input(rng: random.Random):
    query, good = rng.choice(SEEDS)
    text = dump_unified(good) if rng.random() < 0.5 else json.dumps(good, ensure_ascii=False, indent=rng.choice([None, 1]))
    mode = rng.randrange(6)
    if mode == 0:
        return query, _mutate_text(rng, text)
    if mode == 1:
        return query, json.dumps(_mutate_object(rng, good), ensure_ascii=False)
    if mode == 2:
        return query, _mutate_text(rng, json.dumps(_mutate_object(rng, good), ensure_ascii=False))
    if mode == 3:
        return query, "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(200)))
    if mode == 4:
        return query, json.dumps(_random_value(rng), ensure_ascii=rng.random() < 0.5)
    other_query = rng.choice(SEEDS)[0]  # right output, wrong query; or odd query/text types
    return rng.choice([other_query, query, "", None, 3]), rng.choice([text, text.encode(), _mutate_text(rng, text)])


def test_fuzz_never_raises_and_every_result_validates():
    rng = random.Random(20261122)
    stages: dict[str, int] = {}
    for _ in range(FUZZ_CASES):
        query, text = _fuzz_input(rng)
        res = parse_output(text, query)
        assert isinstance(res, ParseResult)
        stages[res.stage] = stages.get(res.stage, 0) + 1
        assert set(res.repairs) <= set(REPAIRS)
        if res.result is None:
            assert isinstance(res.error, str) and res.error
            assert "internal parser error" not in res.error
        else:
            assert res.error is None
            _assert_valid(res, query)
            assert json.loads(dump_unified(res.result)) == res.result
    # The generator must actually exercise every outcome, or the fuzz proves little.
    assert all(stages.get(s, 0) > 100 for s in ("input", "json", "schema", "ok")), stages


def test_every_world_label_parses_clean_and_scores_perfectly(small_world):
    """Contract between the world generator's labels, the parser and the metrics."""
    import pyarrow.parquet as pq

    from qp_core.metrics import evaluate

    rows = []
    for name in ("raw/annotations", "raw/golden"):
        rows += pq.read_table(small_world / name, columns=["query", "label"]).to_pylist()
    assert len(rows) >= 400
    results = [parse_output(r["label"], r["query"]) for r in rows]
    bad = [(r["query"], res.error) for r, res in zip(rows, results) if res.result is None or res.repairs]
    assert not bad, bad[:5]
    assert all(dump_unified(res.result) == r["label"] for r, res in zip(rows, results))
    m = evaluate([res.result for res in results], [{**res.result, "query": r["query"]} for r, res in zip(rows, results)])
    assert m["overall"] == pytest.approx(100.0) and m["intent_chrf"] == pytest.approx(100.0)
