"""The notes pool: short SNS posts (title, tags, body, category) that retrieval offers as query context.

Each note is written around a composed query of one domain, so its text carries the domain's words and
its ``category`` is that query's top-1 label. Notes about an ambiguous word (苹果, 小米, …) always carry
a word that decides the sense (苹果 + 做法, 苹果 + iphone15), so a model reading the notes can tell which
sense they are about — rule step 2 of conf/rules/40_taxonomy.md.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass

from qp_core.world.compose import Composer, Query
from qp_core.world.labels import label_query
from qp_core.world.lexicon import AMBIGUOUS, INTENT, PUNCT, STOP, TOPIC, Word

_TITLE_SUFFIX = ["｜亲测好用", "真的绝了", "分享", "｜保姆级攻略", "合集来啦", "避坑指南", "！", "🔥", "｜干货", "，看这篇就够了"]
_BODY = [
    "最近入了{a}，{b}和{c}都试了一圈，{e}",
    "给姐妹们整理了{a}的心得：{b}真的很加分，{c}也可以看看。{e}",
    "{a}踩过的坑都在这里了，{b}、{c}一定要提前了解。{e}",
    "关于{a}，我最关心的是{b}，顺便聊聊{c}。{e}",
]
_ENDINGS = ["码住慢慢看", "欢迎评论区交流", "建议收藏", "纯分享无广", "有问题留言"]


@dataclass(frozen=True)
class Note:
    note_id: str
    title: str
    body: str
    tags: tuple[str, ...]
    category: str
    created_dt: str
    day: int  # day offset of created_dt from the world's start (may be negative)
    words: tuple[str, ...]  # content words, for retrieval by word


def render_note_text(note: Note) -> str:
    """The note as the prompt shows it: qp_core.prompt.render_note when present, else title｜tags｜body[:60]."""
    try:
        from qp_core.prompt import render_note
    except ImportError:  # pragma: no cover - prompt module is part of the project
        return f"{note.title}｜{' '.join(note.tags)}｜{note.body[:60]}"
    return render_note(note.title, note.body, note.tags)


def _ambiguous_seed(c: Composer, rng: random.Random) -> Query:
    text = rng.choice(list(AMBIGUOUS))
    sense = rng.choice(AMBIGUOUS[text])
    pk = c.packs[sense.label]
    evidence = [w for w in pk.ptypes + pk.topics if w.text not in AMBIGUOUS and w.first_day <= c.day]
    word = Word(text, sense.kind, sense.label)
    return Query((word, rng.choice(evidence)), sense.label)


def _domain_words(c: Composer, domain: str, rng: random.Random, k: int) -> list[str]:
    pk = c.packs[domain]
    pool = [w.text for w in pk.ptypes + pk.topics if w.first_day <= c.day and w.text not in AMBIGUOUS]
    return rng.sample(pool, min(k, len(pool)))


def make_notes(
    n: int, seed: int, start_date: str, days: int, backfill_days: int = 30,
    make_composer: Callable[[random.Random, int], Composer] | None = None,
) -> list[Note]:
    """``n`` notes created from ``backfill_days`` before the start to the last day; deterministic by seed.

    ``make_composer(rng, day)`` gives the world's composer (its drifted lexicon), so a note never mentions
    a word before that word's first day."""
    make_composer = make_composer or (lambda r, d: Composer(r, d))
    rng = random.Random(f"{seed}:notes")
    start = dt.date.fromisoformat(start_date)
    notes = []
    for i in range(n):
        day = rng.randint(-backfill_days, days - 1)
        c = make_composer(rng, max(day, 0))
        q = _ambiguous_seed(c, rng) if rng.random() < 0.12 else c.compose()
        lab = label_query(q.words)
        category = lab["category"][0]
        content = [w.text for w in q.words if w.is_entity or w.kind == TOPIC or w.text in AMBIGUOUS]
        extra = _domain_words(c, category, rng, 3)
        core = [w.text for w in q.words if w.kind not in (STOP, PUNCT, INTENT)]
        title_core = " ".join(core) if rng.random() < 0.5 else "".join(core)
        title = title_core + rng.choice(_TITLE_SUFFIX)
        fill = (extra + ["细节", "体验", "价格"])[:3]
        ev = c.pick(c.lex.evals)
        body = rng.choice(_BODY).format(
            a="".join(core), b=fill[0], c=fill[1], e=(ev.text + "，" if ev and rng.random() < 0.3 else "") + rng.choice(_ENDINGS)
        )
        tags = tuple(dict.fromkeys(content + [category.split("/")[1]] + extra[:1]))
        notes.append(
            Note(
                note_id=f"n{i:06d}",
                title=title,
                body=body,
                tags=tags,
                category=category,
                created_dt=(start + dt.timedelta(days=day)).isoformat(),
                day=day,
                words=tuple(dict.fromkeys(content + extra)),
            )
        )
    return notes


class NoteIndex:
    """Word -> notes containing it; what a lexical retriever would return for a query's content words."""

    def __init__(self, notes: list[Note]):
        self.notes = notes
        self.by_word: dict[str, list[int]] = {}
        for i, n in enumerate(notes):
            for w in n.words:
                self.by_word.setdefault(w, []).append(i)

    def candidates(self, q: Query, max_day: int) -> list[Note]:
        ids: list[int] = []
        for w in q.words:
            if w.is_entity or w.kind == TOPIC or w.text in AMBIGUOUS:
                ids.extend(i for i in self.by_word.get(w.text, ()) if self.notes[i].day <= max_day)
        return [self.notes[i] for i in dict.fromkeys(ids)]

    def retrieve(self, q: Query, max_day: int, m: int, rng: random.Random, p_none: float = 0.25) -> list[Note]:
        """Up to ``m`` notes about the query's words, created no later than ``max_day`` (none at ``p_none``)."""
        if m <= 0 or rng.random() < p_none:
            return []
        cands = self.candidates(q, max_day)
        return rng.sample(cands, min(len(cands), rng.randint(1, m)))
