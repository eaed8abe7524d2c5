"""Plain transformers engine: the fallback behind the same interface (no vLLM, no constrained decoding).

Use it where vLLM can't run (an unusual CPU, a quick debugging session) — it is 2-3x slower than vLLM on CPU
(DESIGN §5) and its outputs are not schema-constrained, so the validation step's fallback does more work.
Greedy decoding in left-padded batches; per-row errors exactly as the vLLM engine reports them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from qp_core.engines.base import (
    PROMPT_TOO_LONG,
    EngineSettings,
    Generation,
    GenerationEngine,
    Messages,
    render_chat,
)

logger = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class HFEngine(GenerationEngine):
    name = "hf"

    def __init__(self, model_dir: str | Path, settings: EngineSettings):
        super().__init__(model_dir, settings)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        want_cuda = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
        self.device = "cuda" if want_cuda else "cpu"
        dtype = getattr(torch, _DTYPES.get(settings.dtype, "float32")) if settings.dtype != "auto" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=dtype).to(self.device).eval()
        gen_cfg = self.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        logger.info("transformers engine on %s (%s, %s)", self.model_dir, self.device, settings.dtype)

    def render(self, messages: Messages) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def generate(
        self, messages: Sequence[Messages], max_tokens: int | None = None, queries: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        from transformers import LogitsProcessorList

        from qp_core.grammar import HFGrammarProcessor

        torch = self.torch
        max_tokens = max_tokens or self.settings.max_new_tokens
        grammars = self.grammars(queries, len(messages))
        limit = min(self.settings.max_prompt_tokens, self.settings.max_model_len - max_tokens)
        results: list[Generation | None] = [None] * len(messages)
        todo: list[tuple[int, list[int]]] = []
        for i, msgs in enumerate(messages):
            try:
                ids = self.render(msgs)
            except Exception as exc:
                results[i] = Generation("", 0, 0, "error", f"render_failed: {exc}"[:300])
                continue
            if len(ids) > limit:
                results[i] = Generation("", len(ids), 0, "error", PROMPT_TOO_LONG)
            else:
                todo.append((i, ids))
        pad = self.tokenizer.pad_token_id
        bs = max(1, self.settings.hf_batch_size)
        for start in range(0, len(todo), bs):
            batch = todo[start : start + bs]
            width = max(len(ids) for _, ids in batch)
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch], device=self.device)
            rows = [grammars[i] for i, _ in batch]
            processors = None
            if any(g is not None for g in rows):
                processors = LogitsProcessorList([HFGrammarProcessor(self.tokenizer, rows)])
            started = time.perf_counter()
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                    pad_token_id=pad, eos_token_id=sorted(self.eos_ids), logits_processor=processors,
                )
            wall = time.perf_counter() - started
            for (i, ids), seq in zip(batch, out[:, width:].tolist()):
                n, finish = len(seq), "length"
                for k, tok in enumerate(seq):
                    if tok in self.eos_ids:
                        n, finish = k, "stop"
                        break
                text = self.tokenizer.decode(seq[:n], skip_special_tokens=True)
                results[i] = Generation(text, len(ids), n + (finish == "stop"), finish, None, round(wall, 4))
            if progress is not None:
                progress(len(batch))
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.model = None
