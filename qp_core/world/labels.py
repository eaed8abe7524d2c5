"""Ground truth: the business rules of ``conf/rules/`` as code, applied to a query's classified words.

Every annotation and golden label comes from ``label_query``; each step cites the rules section it
implements, so a change to the rules text must be mirrored here (and the tests check the examples).
Cross-task dependencies are deliberate (they are what a unified model can exploit and isolated per-task
models cannot): an ambiguous word's entity type and category follow the context; a product type weighs
3 alone but 2 beside a brand or series; the intent description is built from the entities and the top
category.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qp_core.normalize import compact
from qp_core.schema import MAX_CATEGORIES, entity_spans
from qp_core.world.lexicon import AMBIGUOUS, INTENT, INTENTS, DEFAULT_NEED, PUNCT, STOP, TOPIC, Word

# 40_taxonomy.md: priority of word kinds when ranking labels
PRIORITY = ("topic", "product_type", "product_series", "brand", "poi", "ip", "person", "location")
MAX_OBJECT_CHARS = 30


def resolve_word(w: Word, kind: str, label: str) -> Word:
    return Word(w.text, kind, label, w.first_day, w.slang)


def _labelled(words: Sequence[Word]) -> list[tuple[int, int, str]]:
    """(kind priority, position, label) of every word that contributes a label (topic words, entities)."""
    return [(PRIORITY.index(w.kind), i, w.label) for i, w in enumerate(words) if w.kind in PRIORITY and w.label]


def in_query_evidence(words: Sequence[Word], idx: int) -> int | None:
    """Index of the sense of ambiguous word ``words[idx]`` that the other words decide (rule step 0)."""
    senses = AMBIGUOUS[words[idx].text]
    others = sorted(
        (PRIORITY.index(w.kind), j, w.label)
        for j, w in enumerate(words)
        if j != idx and w.text not in AMBIGUOUS and w.kind in PRIORITY and w.label
    )
    for _, _, lab in others:
        for k, sense in enumerate(senses):
            if lab in sense.domains:
                return k
    return None


def _sense_of(text: str, label: str | None) -> int | None:
    for k, sense in enumerate(AMBIGUOUS[text]):
        if label in sense.domains:
            return k
    return None


def is_ambiguous_query(words: Sequence[Word]) -> bool:
    """A query containing an ambiguous word that its own words do not decide."""
    return any(w.text in AMBIGUOUS and in_query_evidence(words, i) is None for i, w in enumerate(words))


def top1_without_context(words: Sequence[Word]) -> str | None:
    """Top-1 category of a history query; None for an ambiguous query without evidence (skipped, step 1)."""
    if is_ambiguous_query(words):
        return None
    cats = categories(resolve(words, (), ())[0])
    return cats[0] if cats else None


def _sense_from_context(text: str, history: Sequence[Sequence[Word]], note_categories: Sequence[str]) -> int:
    """Rule steps 1–3: most recent deciding history query, else majority of notes, else the default."""
    for past in reversed(list(history)):
        k = _sense_of(text, top1_without_context(past))
        if k is not None:
            return k
    counts: dict[int, int] = {}
    first_seen: dict[int, int] = {}
    for i, cat in enumerate(note_categories):
        k = _sense_of(text, cat)
        if k is not None:
            counts[k] = counts.get(k, 0) + 1
            first_seen.setdefault(k, i)
    if counts:
        return max(counts, key=lambda k: (counts[k], -first_seen[k]))
    return 0


def resolve(
    words: Sequence[Word], history: Sequence[Sequence[Word]], note_categories: Sequence[str]
) -> tuple[list[Word], list[str]]:
    """Words with ambiguous ones given their sense, and the secondary labels to append (rule: other senses
    go last when context, not the query, decided)."""
    out = list(words)
    extra: list[str] = []
    for i, w in enumerate(words):
        if w.text not in AMBIGUOUS:
            continue
        senses = AMBIGUOUS[w.text]
        k = in_query_evidence(words, i)
        if k is None:
            k = _sense_from_context(w.text, history, note_categories)
            extra += [s.label for j, s in enumerate(senses) if j != k]
        out[i] = resolve_word(w, senses[k].kind, senses[k].label)
    return out, extra


def categories(words: Sequence[Word], extra: Sequence[str] = ()) -> list[str]:
    """40_taxonomy.md: labels of topic words and entities by kind priority, then query order; dedup; ≤3."""
    out: list[str] = []
    for _, _, lab in sorted(_labelled(words)):
        if lab not in out:
            out.append(lab)
    for lab in extra:
        if lab not in out:
            out.append(lab)
    return out[:MAX_CATEGORIES]


def weights(words: Sequence[Word]) -> list[int]:
    """30_term_weights.md, first matching row."""
    kinds = {w.kind for w in words}
    has_entity = any(w.is_entity for w in words)
    out = []
    for w in words:
        if w.kind in ("brand", "product_series", "person", "ip", "poi"):
            out.append(3)
        elif w.kind == "product_type":
            out.append(2 if kinds & {"brand", "product_series"} else 3)
        elif w.kind == "location":
            out.append(2 if "poi" in kinds else 3)
        elif w.kind == TOPIC:
            out.append(2 if has_entity else 3)
        elif w.kind in (STOP, PUNCT):
            out.append(0)
        else:  # qualifier, intent word, evaluative slang
            out.append(1)
    return out


def intent_desc(words: Sequence[Word], top: str) -> str:
    """50_intent.md: 用户想{需求}，属于{主类目}."""
    obj = "".join(w.text for w in words if w.kind not in (INTENT, STOP, PUNCT))[:MAX_OBJECT_CHARS]
    need = next((INTENTS[w.text] for w in words if w.kind == INTENT), DEFAULT_NEED)
    return f"用户想{need.format(o=obj)}，属于{top}"


def label_query(
    words: Sequence[Word],
    history: Sequence[Sequence[Word]] = (),
    note_categories: Sequence[str] = (),
) -> dict[str, Any]:
    """The unified ground truth for a query made of ``words`` with its context."""
    resolved, extra = resolve(words, history, note_categories)
    cats = categories(resolved, extra)
    return {
        "entities": [{"text": w.text, "type": w.kind} for w in resolved if w.is_entity],
        "segments": [w.text for w in resolved],
        "weights": weights(resolved),
        "category": cats,
        "intent_desc": intent_desc(resolved, cats[0]),
    }


def spans_consistent(words: Sequence[Word]) -> bool:
    """True when each entity's metric span (first occurrence after the previous entity) is its own segment.

    Queries where a word's text also occurs earlier (e.g. inside another word) are rejected by the
    composer, so the metric's span convention and the segmentation never disagree.
    """
    query = "".join(w.text for w in words)
    pos, expected = 0, []
    for w in words:
        if w.is_entity or w.text in AMBIGUOUS:
            expected.append((pos, pos + len(w.text)))
        pos += len(w.text)
    ents = [{"text": w.text, "type": "brand"} for w in words if w.is_entity or w.text in AMBIGUOUS]
    got = [(s[0], s[1]) if s else None for s in entity_spans(ents, query)]
    return got == expected and compact(query) == query
