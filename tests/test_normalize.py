from qp_core.normalize import compact, normalize_query, query_key


def test_nfkc_casefold_trim_collapse():
    assert normalize_query("  ＩＰＨＯＮＥ１５   Pro\t\n") == "iphone15 pro"
    assert normalize_query("Retro-X  显瘦") == "retro-x 显瘦"


def test_control_and_zero_width_characters_are_removed():
    assert normalize_query("雅诗\x00兰黛\u200b粉底液\x1b") == "雅诗 兰黛 粉底液"
    assert compact("雅诗\x00兰黛\u200b粉底液") == "雅诗兰黛粉底液"


def test_none_and_blank():
    assert normalize_query(None) == ""
    assert normalize_query(" \t ") == ""


def test_key_is_shared_by_variants_and_hides_text():
    k = query_key("雅诗兰黛 1C1")
    assert k == query_key("  雅诗兰黛   1c1 ") == query_key("雅诗兰黛\u30001Ｃ1")
    assert k != query_key("雅诗兰黛1c1")  # inner whitespace is kept (collapsed, not removed)
    assert len(k) == 32 and all(c in "0123456789abcdef" for c in k)
    assert "雅" not in k
