"""Batched transformers generation for evaluation (greedy), GRPO-filter rollouts and GRPO's own rollouts.

Why not the nearline engine: the chain generates from many short-lived checkpoints (each stage) in the
same process; transformers loads one in a second, while a vLLM CPU engine costs 15–50 s to start and
reserves memory. Prompts are sorted by length so batches pad little; left padding for decoder-only.

Device: the model loads on the accelerator when there is one (``generation_device``) and every input is
moved to ``model.device``, so evaluation and rollouts run where the model is; CPU otherwise.

Grammar: rollouts decode under each query's grammar like evaluation and serving (``qp_core.grammar``):
an invalid free rollout zeroes Seg, TW and Taxonomy at once, which hides the one-task differences the
GRPO filter and the group advantage need. ``grammar_rollout_func`` gives GRPOTrainer (TRL 1.x
``rollout_func`` hook) the same constrained sampling.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)


def generation_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_generation(model_dir: str | Path, bf16: bool = True, device: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    model.to(device or generation_device())
    model.eval()
    return model, tok


def generate_texts(
    model_dir: str | Path | tuple,  # a model dir, or (model, tokenizer) already loaded
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
            enc = enc.to(model.device)
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


def grammar_rollout_func(query_of: Callable[[Any], str | None]):
    """A TRL ``rollout_func``: GRPOTrainer's rollouts sampled under each prompt's query grammar.

    ``query_of(prompt)`` gives the query a prompt (chat messages) was built for. TRL hands the function
    the batch's prompts (each already repeated ``num_generations`` times by its sampler) and the trainer;
    it returns one completion per prompt with the trainer's own sampling settings. ``logprobs`` is None:
    TRL then takes the old-policy log-probabilities from its own forward pass (no importance-sampling
    correction, as on its plain transformers path). Sampling is from the grammar-masked distribution, as
    vLLM's structured outputs would sample on the GPU path.
    """

    def rollout(prompts: list, trainer) -> dict[str, Any]:
        import torch
        from transformers import LogitsProcessorList

        from qp_core.grammar import HFGrammarProcessor, query_grammars

        tok = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        proc = HFGrammarProcessor(tok, query_grammars([query_of(p) for p in prompts]))
        eos = trainer.eos_token_ids if getattr(trainer, "eos_token_ids", None) else [tok.eos_token_id]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(
                    **enc, do_sample=True, temperature=trainer.temperature, top_p=trainer.top_p, top_k=0,
                    max_new_tokens=trainer.max_completion_length, pad_token_id=tok.pad_token_id,
                    eos_token_id=eos, logits_processor=LogitsProcessorList([proc]),
                )
        finally:
            model.train(was_training)
        n_prompt = enc["input_ids"].shape[1]
        prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"].cpu(), enc["attention_mask"].cpu())]
        completion_ids = []
        for row in out[:, n_prompt:].cpu().tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))  # keep the EOS, drop padding
            completion_ids.append(row[:cut])
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout
