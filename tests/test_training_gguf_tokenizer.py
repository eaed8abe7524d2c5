"""The SentencePiece-BPE tokenizer built from GGUF fields, on a tiny synthetic Gemma-like vocabulary.

The real GGUF (~250 MB, optional package) is not needed: the fields are the same lists llama.cpp writes
(``tokenizer.ggml.tokens/scores/token_type`` …), including its habit of storing space runs with real spaces.
"""

from __future__ import annotations

import pytest

from qp_core.training.gguf_tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    USER_DEFINED,
    build_sentencepiece_bpe,
    hf_tokenizer_from_fields,
    sentencepiece_bpe_merges,
)

# normal pieces, best (highest score) first; single characters last, as in Gemma's vocabulary
MERGED = ["he", "▁t", "▁the", "ab", "▁ab", "abc", "▁abc", "e▁t"]
CHARS = ["▁", "a", "b", "c", "e", "h", "t"]


def fields() -> dict:
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "  "]
    types = [CONTROL] * 6 + [USER_DEFINED] * 2
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [BYTE] * 256
    scores = [-1000.0] * 8 + [0.0] * 256
    tokens += MERGED + CHARS
    types += [NORMAL] * (len(MERGED) + len(CHARS))
    scores += [-float(i) for i in range(len(MERGED) + len(CHARS))]
    return {"model": "llama", "tokens": tokens, "scores": scores, "token_type": types, "bos_token_id": 2,
            "eos_token_id": 1, "unknown_token_id": 3, "padding_token_id": 0, "add_bos_token": True,
            "add_eos_token": False, "add_space_prefix": False}


def test_merges_rank_by_score_and_list_every_split():
    f = fields()
    normal = [i for i, k in enumerate(f["token_type"]) if k == NORMAL]
    merges = sentencepiece_bpe_merges(f["tokens"], f["scores"], normal)
    assert merges == [("h", "e"), ("▁", "t"), ("▁t", "he"), ("a", "b"), ("▁", "ab"), ("ab", "c"),
                      ("▁ab", "c"), ("▁", "abc"), ("e", "▁t")]
    # a better score wins over a lower id
    scores = list(f["scores"])
    scores[f["tokens"].index("ab")] = 5.0
    assert sentencepiece_bpe_merges(f["tokens"], scores, normal)[0] == ("a", "b")


def test_encode_whole_pieces_user_defined_runs_and_byte_fallback_round_trip():
    f = fields()
    tok = build_sentencepiece_bpe(f["tokens"], f["scores"], f["token_type"], unk_id=3)
    text = "the the abc  é\n"
    enc = tok.encode(text)
    # no dummy prefix; two spaces are one user-defined piece; é is not in the vocabulary -> its UTF-8 bytes
    assert enc.tokens == ["t", "he", "▁the", "▁abc", "▁▁", "<0xC3>", "<0xA9>", "\n"]
    assert enc.ids[4] == f["tokens"].index("  ")
    assert tok.decode(enc.ids) == text
    assert tok.encode("e t").tokens == ["e▁t"]  # BPE runs over the whole text, as SentencePiece's encoder does
    assert tok.encode("<start_of_turn>the<end_of_turn>").tokens == ["<start_of_turn>", "t", "he", "<end_of_turn>"]


def test_hf_tokenizer_survives_save_and_reload(tmp_path):
    from transformers import AutoTokenizer

    hf = hf_tokenizer_from_fields(fields(), chat_template="{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    hf.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "the abc  é\n<end_of_turn>"
    assert again(text)["input_ids"] == hf(text)["input_ids"]
    ids = again(text)["input_ids"]
    assert ids[0] == 2 and again.convert_ids_to_tokens(ids[1:4]) == ["t", "he", "▁abc"]
    assert again.decode(ids, skip_special_tokens=True) == "the abc  é\n"
    assert (again.bos_token, again.eos_token, again.pad_token) == ("<bos>", "<eos>", "<pad>")
    assert again.apply_chat_template([{"role": "user", "content": "the"}], tokenize=False) == "<bos>the"


def test_rejects_non_sentencepiece_gguf():
    f = fields() | {"model": "gpt2"}
    with pytest.raises(ValueError):
        hf_tokenizer_from_fields(f)
