"""A correct Hugging Face tokenizer for a SentencePiece-BPE GGUF (Gemma 3), built from its ``tokenizer.ggml.*`` fields.

Why not transformers' own GGUF tokenizer conversion: for Gemma (5.17) it builds a *Unigram* model from the
BPE scores ("What" -> ``Wh``, ``at``), maps ``<0x09>`` onto ``\\t`` (a duplicate: ``\\t`` is a token of its
own) and, because ``GemmaTokenizer`` is a BPE class, a ``save_pretrained``/``from_pretrained`` round trip
keeps the vocabulary without merges: one token per character. The model then reads text it never saw.

What SentencePiece BPE does, and how it is mirrored here with the ``tokenizers`` library:

* normalisation: spaces become ``▁``; Gemma 3 adds *no* dummy prefix (``add_space_prefix`` is false);
* user-defined pieces (token type 4: runs of ``\\n``/``\\t``/spaces, a few HTML tags) are matched whole,
  longest first, before BPE -> non-special added tokens; control pieces (type 3: ``<bos>``,
  ``<start_of_turn>``, ``<unusedN>`` …) never come from SentencePiece's text, but chat templates spell them
  out, so they are special added tokens, as in every HF chat model;
* BPE merges adjacent symbols whose concatenation is a normal piece (type 1), highest score first. A
  ``tokenizers`` BPE with, for every normal piece, every split into two normal pieces, ranked by the piece's
  score (ties: vocabulary id) makes the same choices (transformers' ``SentencePieceExtractor`` does the same
  for ``.model`` files). Like SentencePiece's encoder (``bpe_model.cc``), BPE runs over the whole normalised
  text, not word by word, so a piece such as ``>▁</`` is reachable;
* characters outside the vocabulary fall back to ``<0xNN>`` byte pieces (type 6); decoding reverses all of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)

# llama.cpp token types (``tokenizer.ggml.token_type``)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "▁"
BUILDER_VERSION = 1
SOURCE_FILE = "tokenizer_source.json"  # beside tokenizer.json: which GGUF and builder version made it


def sentencepiece_bpe_merges(tokens: Sequence[str], scores: Sequence[float], mergeable: Iterable[int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece BPE over ``tokens``: for each mergeable piece (by score, highest
    first; ties by id), every split of it into two mergeable pieces, left pieces by id."""
    index = {tokens[i]: i for i in mergeable}
    ids = [i for i in index.values() if len(tokens[i]) > 1]
    merges: list[tuple[str, str]] = []
    for i in sorted(ids, key=lambda i: (-scores[i], i)):
        piece = tokens[i]
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in index and piece[k:] in index]
        splits.sort(key=lambda lr: (index[lr[0]], index[lr[1]]))
        merges.extend(splits)
    return merges


def _vocab_piece(token: str, token_type: int) -> str:
    """The vocabulary string of a GGUF token: llama.cpp stores user-defined space runs with real spaces."""
    if token_type == USER_DEFINED and token and not token.strip(" "):
        return SPACE * len(token)
    return token


def build_sentencepiece_bpe(tokens: Sequence[str], scores: Sequence[float], token_types: Sequence[int], *,
                            unk_id: int, add_space_prefix: bool = False):
    """A ``tokenizers.Tokenizer`` reproducing SentencePiece BPE (with byte fallback) over a GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    if not (len(tokens) == len(scores) == len(token_types)):
        raise ValueError("tokens, scores and token_type differ in length")
    pieces = [_vocab_piece(t, int(k)) for t, k in zip(tokens, token_types)]
    if len(set(pieces)) != len(pieces):
        raise ValueError("GGUF vocabulary has duplicate pieces")
    vocab = {p: i for i, p in enumerate(pieces)}
    normal = [i for i, k in enumerate(token_types) if int(k) == NORMAL]
    merges = sentencepiece_bpe_merges(pieces, scores, normal)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=pieces[unk_id], fuse_unk=True, byte_fallback=True, dropout=None))
    steps = [normalizers.Replace(" ", SPACE)]
    if add_space_prefix:
        steps.insert(0, normalizers.Prepend(SPACE))
    tok.normalizer = normalizers.Sequence(steps) if len(steps) > 1 else steps[0]
    # after normalisation there are no spaces left: this matches GemmaTokenizer's own (no-op) pre-tokenizer
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    dec = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False)
                            for i, k in enumerate(token_types) if int(k) == CONTROL])
    # user-defined pieces are matched in the normalised text, as SentencePiece does (space runs are "▁▁…")
    tok.add_tokens([AddedToken(pieces[i], special=False, normalized=True)
                    for i, k in enumerate(token_types) if int(k) == USER_DEFINED])
    logger.info("SentencePiece BPE tokenizer: %d pieces, %d merges", len(pieces), len(merges))
    return tok


def read_gguf_tokenizer_fields(gguf_path: str | Path) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` metadata of a GGUF file (needs the ``gguf`` package; ~10 s for Gemma 3 270M)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    return {key[len("tokenizer.ggml."):]: field.contents() for key, field in reader.fields.items()
            if key.startswith("tokenizer.ggml.")}


def hf_tokenizer_from_fields(fields: dict[str, Any], chat_template: str | None = None):
    """A transformers ``GemmaTokenizer`` (fast) from GGUF tokenizer fields of a SentencePiece-BPE model."""
    from transformers import GemmaTokenizer

    if fields.get("model") != "llama":
        raise ValueError(f"not a SentencePiece GGUF tokenizer: tokenizer.ggml.model={fields.get('model')!r}")
    tokens = list(fields["tokens"])
    tok = build_sentencepiece_bpe(tokens, list(fields["scores"]), list(fields["token_type"]),
                                  unk_id=int(fields.get("unknown_token_id", 3)),
                                  add_space_prefix=bool(fields.get("add_space_prefix", False)))

    def name(key: str, default: str) -> str:
        return tokens[int(fields[key])] if key in fields else default

    kwargs = dict(
        tokenizer_object=tok,
        bos_token=name("bos_token_id", "<bos>"), eos_token=name("eos_token_id", "<eos>"),
        unk_token=name("unknown_token_id", "<unk>"), pad_token=name("padding_token_id", "<pad>"),
        add_bos_token=bool(fields.get("add_bos_token", True)), add_eos_token=bool(fields.get("add_eos_token", False)),
    )
    if "<mask>" in tokens:
        kwargs["mask_token"] = "<mask>"
    hf = GemmaTokenizer(**kwargs)
    if chat_template:
        hf.chat_template = chat_template
    return hf


def write_gguf_tokenizer(gguf_path: str | Path, out_dir: str | Path, chat_template: str | None = None):
    """Build the tokenizer of ``gguf_path`` and ``save_pretrained`` it into ``out_dir`` (with a source note)."""
    gguf_path, out = Path(gguf_path), Path(out_dir)
    hf = hf_tokenizer_from_fields(read_gguf_tokenizer_fields(gguf_path), chat_template)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    (out / SOURCE_FILE).write_text(json.dumps({"gguf": gguf_path.name, "builder": __name__,
                                               "version": BUILDER_VERSION}, indent=1), encoding="utf-8")
    return hf


def tokenizer_is_current(model_dir: str | Path) -> bool:
    """Whether ``model_dir``'s tokenizer was written by this builder (older conversions used transformers')."""
    path = Path(model_dir) / SOURCE_FILE
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("version") == BUILDER_VERSION
    except ValueError:
        return False
