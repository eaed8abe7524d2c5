"""Query-aware constrained decoding: one grammar per query that admits only outputs valid for that query.

Why: the contract's hardest rules depend on the query, so a static JSON schema cannot express them —
``segments`` must tile the normalised query, ``weights`` has one level per segment, entity texts are
substrings of the query, left to right. A small model's typical failure is one wrong character while copying
the query, which costs the whole row (it falls back to the legacy answer). The grammar built here makes those
rules part of decoding, so every complete output passes ``schema.validation_errors`` except for a repeated
category label (not expressible compactly; ``parse`` drops the repeat, repair ``duplicate_category``). The text is byte-for-byte the
canonical serialisation (``schema.dump_unified``) the model was trained on, so the constraint only removes
choices, it never forces an unfamiliar format.

The grammar is Lark as llguidance reads it; vLLM takes it as ``StructuredOutputsParams(grammar=...)`` with
the ``guidance`` backend, and ``HFGrammarProcessor`` applies it to ``transformers`` generation.

Construction, over the characters c_1..c_n of ``normalize.compact(query)``:

* segments: ``seg_i`` is "after c_i": either c_{i+1} continues the segment, or ``","`` opens a new one and
  the rule also emits one more weight *after* the segments close — a nested (context-free) way to make the
  number of weights equal the number of segments;
* entities: ``ent_i`` = one entity starting at or after i (any substring c_j..c_k), then ``]`` or the next
  entity starting at or after k: O(n²) alternatives, which keeps them ordered and non-overlapping.

``fields_grammar`` builds the grammar of any subsequence of the fields from these blocks: ``query_grammar``
is all five, ``task_grammar`` one sub-task's (``prompt.task_target``), which Table 2's task-isolated models
decode under (``seg`` alone closes the segments without weights).
"""

from __future__ import annotations

import json
from typing import Sequence

from qp_core.normalize import compact
from qp_core.schema import FIELDS, MAX_CATEGORIES, MAX_INTENT_CHARS, MAX_WEIGHT, entity_types, taxonomy_labels


def _lit(text: str) -> str:
    """A Lark string literal matching ``text`` exactly."""
    return json.dumps(text, ensure_ascii=False)


def _json_chars(text: str) -> str:
    """``text`` as it appears inside a JSON string of the canonical serialisation."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


class _Sym(str):
    """A Lark symbol (rule name or ready-made literal) among the output text of a ``start`` rule."""


def _start_rule(items: list[str]) -> str:
    """``start`` from output text (plain str, adjacent pieces merged into one literal) and ``_Sym`` items."""
    parts: list[str] = []
    text = ""
    for item in items:
        if isinstance(item, _Sym):
            if text:
                parts.append(_lit(text))
                text = ""
            parts.append(str(item))
        else:
            text += item
    if text:
        parts.append(_lit(text))
    return "start: " + " ".join(parts)


def fields_grammar(query: str, fields: Sequence[str], max_entity_chars: int = 32) -> str:
    """The Lark grammar of the canonical compact JSON object holding ``fields`` (in ``schema.FIELDS`` order)
    for ``query``: all five for the unified output, one sub-task's fields for its ``prompt.task_target``.

    One builder for both, so a task model's decoding is constrained by exactly the rules the unified
    model's is for those fields. ``weights`` needs ``segments``: the count coupling lives in the segment
    rules (module doc)."""
    fields = tuple(fields)
    if not fields or fields != tuple(f for f in FIELDS if f in fields) or len(set(fields)) != len(fields):
        raise ValueError(f"fields must be a non-empty subsequence of {FIELDS}, got {fields}")
    weights = "weights" in fields
    if weights and "segments" not in fields:
        raise ValueError("weights come only with segments (one weight per segment)")
    q = compact(query)
    if not q:
        raise ValueError("query is empty after normalisation")
    n = len(q)
    ch = [_json_chars(c) for c in q]
    pieces = {  # each field's text in the object; "weights" is emitted by the segment rules
        "entities": ['"entities":', _Sym("ents")],
        "segments": ['"segments":["', _Sym(_lit(ch[0])), _Sym("seg_1"), "]"],
        "category": ['"category":[', _Sym("cats"), "]"],
        "intent_desc": ['"intent_desc":"', _Sym("INTENT"), '"'],
    }
    items: list[str] = ["{"]
    for i, f in enumerate(f for f in fields if f != "weights"):
        items += ([","] if i else []) + pieces[f]
    lines = [_start_rule(items + ["}"])]
    if "entities" in fields:
        lines += ["ents: \"[]\" | \"[\" ent_0",
                  "etype: " + " | ".join(_lit(_lit(t)) for t in entity_types())]
    if "category" in fields:
        lines += ["cat: " + " | ".join(_lit(_lit(label)) for label in taxonomy_labels()),
                  "cats: cat" + "".join(' ("," cat' for _ in range(MAX_CATEGORIES - 1)) + ")?" * (MAX_CATEGORIES - 1)]
    if weights:
        lines.append(f"w: /[0-{MAX_WEIGHT}]/")
    if "intent_desc" in fields:
        # first character not whitespace (intent must not be blank); no quote, backslash or control chars
        lines.append(f'INTENT: /[^"\\\\\\x00-\\x1f\\s][^"\\\\\\x00-\\x1f]{{0,{MAX_INTENT_CHARS - 1}}}/')
    if "segments" in fields:
        new_seg = _lit('","')
        more = ' "," w' if weights else ""  # a new segment owes one more weight after the segments close
        for i in range(1, n):
            nxt = _lit(ch[i])
            lines.append(f"seg_{i}: {nxt} seg_{i + 1} | {new_seg} {nxt} seg_{i + 1}{more}")
        lines.append(f"seg_{n}: " + (_lit('"],"weights":[') + " w" if weights else _lit('"')))
    if "entities" in fields:
        for i in range(n):
            lines.append(f"ent_{i}: " + " | ".join(f"span_{j}" for j in range(i, n)))
        for j in range(n):
            alts = []
            for k in range(j + 1, min(n, j + max_entity_chars) + 1):
                text = _lit("".join(ch[j:k]))
                tail = '"]"' if k == n else f'("]" | "," ent_{k})'
                alts.append(f'"{{\\"text\\":\\"" {text} "\\",\\"type\\":" etype "}}" {tail}')
            lines.append(f"span_{j}: " + " | ".join(alts))
    return "\n".join(lines) + "\n"


def query_grammar(query: str, max_entity_chars: int = 32) -> str:
    """The Lark grammar of every valid unified output for ``query`` (canonical compact JSON)."""
    return fields_grammar(query, FIELDS, max_entity_chars)


def task_grammar(query: str, task: str, max_entity_chars: int = 32) -> str:
    """The Lark grammar of every valid single-task output for ``query``: the canonical compact JSON of
    ``prompt.task_target(task, ...)`` (``tw``: segments and weights, coupled as in ``query_grammar``).

    Table 2's task-isolated models decode under it, so they get the same constrained decoding as the
    unified model and the comparison is about the model, not about copying accuracy."""
    from qp_core.prompt import task_fields  # lazy: grammar stays importable without the prompt settings

    return fields_grammar(query, task_fields(task), max_entity_chars)


def query_grammars(queries: Sequence[str | None], task: str | None = None) -> list[str | None]:
    """``query_grammar`` per row (``task_grammar`` of ``task`` when given); None where the query is missing
    or empty after normalisation (such a row runs unconstrained, and the validator rejects it anyway)."""
    out: list[str | None] = []
    for q in queries:
        try:
            out.append((query_grammar(q) if task is None else task_grammar(q, task)) if q else None)
        except ValueError:
            out.append(None)
    return out


class HFGrammarProcessor:
    """A ``transformers`` logits processor that masks each row's logits to its own query grammar.

    One llguidance matcher per batch row (``grammars[i]`` repeated ``num_return_sequences`` times, as
    ``generate`` lays rows out); a row whose grammar is None runs free. A stopped matcher admits only EOS.
    A matcher in error (not expected: every token it is fed was allowed by its own mask) leaves its row
    unconstrained; the validator still judges the output.
    """

    def __init__(self, tokenizer, grammars: Sequence[str | None], num_return_sequences: int = 1):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self._lt = llguidance.torch
        lltok = llguidance.hf.from_tokenizer(tokenizer)
        self.matchers = []
        for g in grammars:
            compiled = llguidance.LLMatcher.grammar_from_lark(g) if g is not None else None
            self.matchers += [
                llguidance.LLMatcher(lltok, compiled, log_level=0) if compiled else None
                for _ in range(num_return_sequences)
            ]
        self.bitmask = self._lt.allocate_token_bitmask(len(self.matchers), lltok.vocab_size)
        self._first_step = True

    def __call__(self, input_ids, scores):
        if self._first_step:  # input_ids is the prompt only
            self._first_step = False
        else:  # feed each row the token chosen at the previous step
            for m, tok in zip(self.matchers, input_ids[:, -1].tolist()):
                if m is not None and not m.is_stopped() and not m.is_error():
                    m.consume_token(tok)
        for i, m in enumerate(self.matchers):
            if m is None or m.is_error():
                self.bitmask[i].fill_(-1)
            else:
                self._lt.fill_next_token_bitmask(m, self.bitmask, i)
        apply_bitmask(scores, self.bitmask.to(scores.device))
        return scores


def apply_bitmask(scores, bitmask) -> None:
    """Set ``scores`` to -inf wherever the packed int32 ``bitmask`` (bit j of word w = token 32·w + j) is 0.

    Eager torch on purpose: ``llguidance.torch.apply_token_bitmask_inplace`` is a ``torch.compile`` kernel
    whose compilation cost ~30 s per process on this CPU (cProfile of a 64-row evaluation: 32 of 90 s),
    more than the masking itself costs over a whole golden-set evaluation, and it needs a C++ toolchain.
    """
    import torch

    vocab = scores.shape[-1]
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).flatten(1).bool()
    if allowed.shape[1] < vocab:  # tokens past the tokenizer's vocabulary (padded embedding rows)
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]), value=False)
    scores.masked_fill_(~allowed[:, :vocab], float("-inf"))

