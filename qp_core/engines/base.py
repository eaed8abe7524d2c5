"""The engine interface, its settings, and the factory.

An engine turns chat prompts (``[{"role": ..., "content": ...}, ...]``) into one ``Generation`` per prompt,
in input order. Failures are per row (``error`` set, ``text`` empty) so one bad prompt never sinks a shard:
a prompt longer than ``max_prompt_tokens`` is flagged ``prompt_too_long`` and not sent to the model.

Settings come from ``conf/generation.yaml`` (section ``engine``), then the model's profile
(``conf/profiles/<name>.yaml``: dtype, lengths and its ``engine`` overrides) — see ``engine_settings_for``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from qp_core.config import Settings

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
PROMPT_TOO_LONG = "prompt_too_long"


@dataclass
class Generation:
    """One model answer. ``finish_reason``: ``stop`` (EOS), ``length`` (hit max_tokens) or ``error``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    error: str | None = None
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EngineSettings(Settings):
    """How to run a model. Field names are the YAML keys of ``conf/generation.yaml`` → ``engine``."""

    backend: Literal["vllm", "hf"] = "vllm"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = 2048
    max_prompt_tokens: int = 1536
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    # constrained decoding to qp_core.schema.json_schema(); guidance: valid 32/32 (DESIGN §5)
    structured_output: bool = True
    # with structured_output: rows that come with their query are held to that query's grammar
    # (qp_core.grammar: segments tile the query, one weight per segment, entities are its substrings)
    query_grammar: bool = True
    structured_backend: Literal["guidance", "xgrammar", "outlines", "auto"] = "guidance"
    enable_prefix_caching: bool = True
    enforce_eager: bool = True  # CPU: 15-50 s start instead of ~60 s
    max_num_seqs: int = 128
    # CPU only: KV cache size (GiB) and cores vLLM leaves to the frontend (0 = use all; 1.5x faster on 2 cores)
    kv_cache_space_gib: int = 1
    cpu_reserved_cores: int = 0
    # GPU only
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    # hf backend: prompts per transformers.generate call
    hf_batch_size: int = 16
    # passed through to vllm.LLM as is (escape hatch for deployment-specific options)
    llm_kwargs: dict[str, Any] = Field(default_factory=dict)


class GenerationEngine(ABC):
    """Batch generator over chat prompts. Use as a context manager, or call ``close()``."""

    name = "base"

    def __init__(self, model_dir: str | Path, settings: EngineSettings):
        self.model_dir = Path(model_dir)
        self.settings = settings

    @abstractmethod
    def generate(
        self, messages: Sequence[Messages], max_tokens: int | None = None, queries: Sequence[str] | None = None
    ) -> list[Generation]:
        """One ``Generation`` per prompt, in order; ``max_tokens`` defaults to ``settings.max_new_tokens``.

        ``queries`` (aligned with ``messages``) lets the engine hold each row to its query's grammar.
        """

    def grammars(self, queries: Sequence[str] | None, n: int) -> list[str | None]:
        """Per-row query grammar where the settings ask for one and the row has a query, else None."""
        from qp_core.grammar import query_grammars

        if not (self.settings.structured_output and self.settings.query_grammar and queries):
            return [None] * n
        return query_grammars(queries)

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(self.render(messages))

    @abstractmethod
    def render(self, messages: Messages) -> list[int]:
        """Token ids of the chat-templated prompt (with the assistant turn opened)."""

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Free the model (and any worker processes)."""

    def __enter__(self) -> "GenerationEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def render_chat(tokenizer: Any, messages: Messages) -> list[int]:
    """Chat template applied with the generation prompt, as token ids (no extra BOS beyond the template's)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
