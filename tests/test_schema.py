import json

import pytest

from qp_core import schema

QUERY = "雅诗兰黛 1c1粉底液色号"
GOOD = {
    "entities": [{"text": "雅诗兰黛", "type": "brand"}, {"text": "1c1", "type": "product_series"}],
    "segments": ["雅诗兰黛", "1c1", "粉底液", "色号"],
    "weights": [3, 3, 2, 1],
    "category": ["美妆/彩妆"],
    "intent_desc": "用户在挑选雅诗兰黛粉底液的1c1色号",
}


def bad(**changes):
    return {**GOOD, **changes}


def test_good_result_validates_and_dumps_in_task_order():
    assert schema.validation_errors(GOOD, QUERY) == []
    dumped = schema.dump_unified(dict(reversed(list(GOOD.items()))))
    assert list(json.loads(dumped)) == list(schema.FIELDS)
    assert "雅诗兰黛" in dumped  # UTF-8, not \u escapes


@pytest.mark.parametrize(
    "data, fragment",
    [
        (bad(segments=["雅诗兰黛", "1c1", "粉底液"]), "concatenation"),
        (bad(weights=[3, 3, 2]), "3 weights for 4 segments"),
        (bad(weights=[3, 3, 2, 4]), "weights[3]: 4 outside 0..3"),
        (bad(entities=[{"text": "兰蔻", "type": "brand"}]), "entities[0].text"),
        (bad(entities=[{"text": "1c1", "type": "product_series"}, {"text": "雅诗兰黛", "type": "brand"}]), "entities[1].text"),
        (bad(entities=[{"text": "雅诗兰黛", "type": "company"}]), "not in ontology"),
        (bad(category=[]), "category: empty"),
        (bad(category=["美妆/香水"]), "not in taxonomy"),
        (bad(category=["美妆/彩妆", "美妆/彩妆"]), "duplicate"),
        (bad(intent_desc="  "), "intent_desc: empty"),
        (bad(weights=["high", 3, 2, 1]), "weights.0"),
        ({k: v for k, v in GOOD.items() if k != "category"}, "category: Field required"),
        (bad(extra=1), "extra"),
        ("not a dict", "<root>"),
    ],
)
def test_each_rule_fails_with_a_precise_message(data, fragment):
    errors = schema.validation_errors(data, QUERY)
    assert errors, "expected a failure"
    assert any(fragment in e for e in errors), errors


def test_validate_result_raises_with_all_errors():
    with pytest.raises(schema.SchemaError) as exc:
        schema.validate_result(bad(weights=[9], category=[]), QUERY)
    assert len(exc.value.errors) >= 3


def test_spans_follow_left_to_right_rule_on_repeated_substrings():
    q = "小米小米手机"
    ents = [{"text": "小米", "type": "brand"}, {"text": "小米", "type": "brand"}, {"text": "手机", "type": "product_type"}]
    assert schema.entity_spans(ents, q) == [(0, 2, "brand"), (2, 4, "brand"), (4, 6, "product_type")]
    assert schema.segment_spans(["小米", "小米手机"]) == [(0, 2), (2, 6)]


def test_json_schema_is_flat_and_uses_conf_labels():
    js = schema.json_schema()
    assert "$defs" not in json.dumps(js) and "$ref" not in json.dumps(js)
    assert js["required"] == list(schema.FIELDS)
    assert js["properties"]["category"]["items"]["enum"] == list(schema.taxonomy_labels())
    assert js["properties"]["weights"]["items"]["maximum"] == 3
    assert set(js["properties"]["entities"]["items"]["properties"]["type"]["enum"]) == set(schema.entity_types())
