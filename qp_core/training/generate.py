"""Batched transformers generation for evaluation (greedy) and GRPO-filter rollouts (sampling) on CPU.

Why not the nearline engine: the chain generates from many short-lived checkpoints (each stage) in the
same process; transformers loads one in a second, while a vLLM CPU engine costs 15–50 s to start and
reserves memory. Prompts are sorted by length so batches pad little; left padding for decoder-only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def load_for_generation(model_dir: str | Path, bf16: bool = True):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    model.eval()
    return model, tok


def generate_texts(
    model_dir: str | Path | tuple,
    prompts: list[list[dict[str, str]]],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 192,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    bf16: bool = True,
    seed: int = 0,
    progress: Any = None,
    grammars: list[str] | None = None,
) -> list[list[str]]:
    """For each prompt (chat messages), ``num_return_sequences`` completions (decoded, special tokens dropped).

    ``grammars`` (one Lark grammar per prompt, ``qp_core.grammar.query_grammar``) constrains each prompt's
    decoding to its own grammar, as the nearline vLLM engine does.
    """
    import torch
    from transformers import LogitsProcessorList

    from qp_core.grammar import HFGrammarProcessor

    model, tok = model_dir if isinstance(model_dir, tuple) else load_for_generation(model_dir, bf16)
    torch.manual_seed(seed)
    from qp_core.prompt import neutralize_messages

    texts = [tok.apply_chat_template(neutralize_messages(p, tok), add_generation_prompt=True, tokenize=False)
             for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[list[str]] = [[] for _ in texts]
    t0 = time.time()
    n_tokens = 0
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=tok.pad_token_id, num_return_sequences=num_return_sequences)
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    step = max(1, batch_size // max(1, num_return_sequences))
    with torch.inference_mode():
        for start in range(0, len(order), step):
            idx = order[start:start + step]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            if grammars is not None:
                proc = HFGrammarProcessor(tok, [grammars[i] for i in idx], num_return_sequences)
                gen_kwargs["logits_processor"] = LogitsProcessorList([proc])
            gen = model.generate(**enc, **gen_kwargs)
            new = gen[:, enc["input_ids"].shape[1]:]
            n_tokens += int((new != tok.pad_token_id).sum())
            decoded = tok.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = decoded[j * num_return_sequences:(j + 1) * num_return_sequences]
            if progress is not None:
                progress(len(idx))
    dt = time.time() - t0
    logger.info("generated %d x %d in %.1fs (%.0f tok/s)", len(prompts), num_return_sequences, dt, n_tokens / max(dt, 1e-9))
    return out
