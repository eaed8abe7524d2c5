import string

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


# ------------------------------------------------------------------------------ fixed point (property)
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Combining marks of several canonical classes (230 above, 220 below, 240 U+0345 that case-folds to ι,
# 1 overlays, 202 attached), controls, zero-width/format characters, surrogates and characters whose
# case-fold or NFKC form is several characters (ß, ẞ, ﬁ, İ, ǰ, ΐ, the Greek with ypogegrammeni).
_MARKS = "\u0300\u0301\u0302\u0308\u030c\u0316\u0323\u0327\u0328\u0334\u0338\u0345\u0358\u035c\u0360\u3099\u309a"
_TRICKY = "ßẞﬁﬀİıǰΐΰᾳᾼῳάΪΫϔ´¨˜\u00a0\u3000\u200b\u200d\u2028\ufeff\x00\x1b\x85\ud800\udfff"
_SPECIAL = st.sampled_from(list(_MARKS + _TRICKY + "aAeE é 雅诗 \t\n1１Ａ"))
_TEXT = st.one_of(
    st.text(),  # any code point, surrogates included
    st.text(alphabet=_SPECIAL, max_size=12),
    st.lists(st.tuples(st.characters(), st.text(alphabet=_MARKS, min_size=1, max_size=4)), max_size=4).map(
        lambda runs: "".join(base + marks for base, marks in runs)),  # bases followed by runs of marks
    st.text(alphabet=st.characters(categories=("Mn", "Mc", "Me", "Cc", "Cf", "Cs", "Zs", "Lu", "Lt")), max_size=10),
)


@settings(max_examples=3000, deadline=None)
@given(_TEXT)
@example("aß\u0301")  # case-folding ß undoes NFKC: "ss\u0301" composes to "sś" on the second pass
@example("\u1f02\u0345\u0301")  # U+0345 folds to a spacing iota: marks reorder
@example("a\u200b\u0301\u0323")  # a removed zero-width character strands the marks behind a space
@example("\ud800雅诗")  # a lone surrogate is not UTF-8: removed, so query_key never raises
def test_normalize_is_a_fixed_point(text):
    once = normalize_query(text)
    assert normalize_query(once) == once
    assert query_key(once) == query_key(text)  # the writer may hash either form: same key
    once.encode("utf-8")  # always encodable


def test_known_non_idempotent_inputs_are_fixed():
    assert normalize_query("Aß\u0301") == normalize_query(normalize_query("Aß\u0301")) == "asś"


# ------------------------------------------------------------------ the JVM fast path (already normal)
_RUN = st.text(alphabet=st.one_of(st.sampled_from(string.ascii_letters + string.digits),
                                  st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)), min_size=1, max_size=8)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_RUN, min_size=1, max_size=6).map(" ".join))
def test_strings_the_jvm_normalises_are_normalised_by_ascii_lowering(text):
    """What ``text.LOWER_IS_NORMAL_JAVA`` accepts, Spark normalises without Python by translating A-Z to a-z:
    every such string must normalise to exactly that and be well formed (the length limit is checked in the
    JVM)."""
    import re

    from qp_core.nearline.text import (ASCII_LOWER, ASCII_UPPER, LOWER_IS_NORMAL_CHARS, LOWER_IS_NORMAL_JAVA,
                                       malformed_reason)

    python_pattern = LOWER_IS_NORMAL_JAVA.replace(r"\z", r"\Z")  # Java's \z is Python's \Z
    assert python_pattern.count(LOWER_IS_NORMAL_CHARS) == 2 and re.match(python_pattern, text)
    norm = text.translate(str.maketrans(ASCII_UPPER, ASCII_LOWER))
    assert normalize_query(text) == norm
    assert malformed_reason(text, norm, len(text)) is None
