"""``generate``: write the synthetic world's raw datasets (docs/ARCHITECTURE.md) into a lake root.

Order matters for the guarantees the tests check:
1. the notes pool and the Zipf head (popular queries that recur daily) are drawn first;
2. the golden set is drawn next from fresh sessions, never from the head, and its queries are *reserved*;
3. the daily logs never emit a reserved query, and annotations are sampled from the logs — so golden
   queries appear neither in ``raw/query_log`` (where auxiliary data is mined) nor in ``raw/annotations``.
Every random stream is seeded from (seed, purpose[, day]), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qp_core.lake import ANNOTATIONS, GOLDEN, NOTES, QUERY_LOG
from qp_core.normalize import compact, normalize_query
from qp_core.schema import dump_unified, validation_errors
from qp_core.world.compose import Composer, Query
from qp_core.world.drift import is_trending, world_lexicon
from qp_core.world.labels import is_ambiguous_query, label_query
from qp_core.world.lexicon import AMBIGUOUS
from qp_core.world.notes import Note, NoteIndex, make_notes, render_note_text
from qp_core.world.settings import WorldSettings, load_world_settings

logger = logging.getLogger(__name__)

PLATFORMS = ("ios", "android", "web", "mini_program")
PLATFORM_W = (45, 40, 8, 7)
_EMOJI_ONLY = ["😂😂😂", "🔥", "✨💄✨", "🙏🙏", "❤️", "👀👀👀👀"]
_CTRL_ONLY = ["\x00\x01\x02", "\x1b[31m\x07", "\u200b\u200b", "\x7f\x08\t"]


@dataclass
class LogEvent:
    user_id: str
    session_id: str
    ts: dt.datetime
    raw: str | None
    platform: str
    query: Query | None = None  # None for malformed rows
    history: list[tuple[str, Query]] = field(default_factory=list)  # preceding valid queries of the session


def malformed_query(rng: random.Random, composer: Composer, reserved: set[str] = frozenset()) -> str | None:
    """One broken log value: null, empty, whitespace, emoji-only, 5,000 characters, control characters.

    Those built from a real query never use a reserved (golden) one: after cleaning they would leak it.
    """

    def a_query() -> str:
        q = composer.compose()
        while q.text in reserved:
            q = composer.compose()
        return composer.render(q)

    kind = rng.randrange(7)
    if kind == 0:
        return None
    if kind == 1:
        return ""
    if kind == 2:
        return " " * rng.randint(1, 4)
    if kind == 3:
        return rng.choice(_EMOJI_ONLY)
    if kind == 4:
        base = a_query()
        return (base * (5000 // max(len(base), 1) + 1))[:5000]
    if kind == 5:
        return rng.choice(_CTRL_ONLY)
    base = a_query()
    cut = rng.randint(0, len(base))
    return base[:cut] + rng.choice(["\x00", "\x1b", "\u200b", "\r\n"]) + base[cut:]


def composer(s: WorldSettings, rng: random.Random, day: int, *, trending: bool = True) -> Composer:
    """A composer over the world's (drifted) lexicon for ``day``; ``trending`` applies the trend boost."""
    boost = s.drift.trend_boost if trending else 0.0
    return Composer(rng, day, world_lexicon(s), trend_boost=boost, trend_days=s.drift.trend_days)


def build_head(s: WorldSettings) -> list[tuple[Query, int]]:
    """The popular queries (head) with the day they become available (their newest word's first day).

    Composed without the trend boost: the head is the long-lived popular set, not today's trends."""
    rng = random.Random(f"{s.seed}:head")
    c = composer(s, rng, s.days - 1, trending=False)
    head: dict[str, tuple[Query, int]] = {}
    tries = 0
    while len(head) < s.head_size and tries < s.head_size * 20:
        tries += 1
        q = c.compose() if rng.random() > 0.03 else c.compose_ambiguous()
        if len(q.words) > 3 and rng.random() < 0.7:
            continue  # head queries are short
        if q.text not in head:
            head[q.text] = (q, max(w.first_day for w in q.words))
    return list(head.values())


def _ambiguous_golden(c: Composer) -> Query:
    """Golden-only shape of an ambiguous query (qualifier + word + intent/slang): never typed in the logs."""
    for _ in range(50):
        q = c.compose_ambiguous()
        if len(q.words) == 3:
            return q
    return q


def _session(c: Composer, rng: random.Random, s: WorldSettings, first: Query) -> list[Query]:
    out = [first]
    while len(out) < s.max_session_len and rng.random() < s.refine_prob:
        nxt = c.refine(out[-1]) or c.compose(out[-1].domain or None)
        out.append(nxt)
    return out


def _context_then_ambiguous(c: Composer, rng: random.Random, amb: Query) -> list[Query]:
    """A session whose earlier query (60%) is in the domain of the sense the user means."""
    text = next(w.text for w in amb.words if w.text in AMBIGUOUS)
    sense = rng.choice(AMBIGUOUS[text])
    if rng.random() < 0.6:
        return [c.compose(sense.label), amb]
    return [amb]


def build_golden(s: WorldSettings, head_texts: set[str], notes: NoteIndex) -> list[dict[str, Any]]:
    rng = random.Random(f"{s.seed}:golden")
    c = composer(s, rng, s.days - 1)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    n_amb = round(s.golden * s.ambiguous_golden_share)
    tries = 0
    while len(rows) < s.golden and tries < s.golden * 50:
        tries += 1
        if len(rows) < n_amb:
            session = _context_then_ambiguous(c, rng, _ambiguous_golden(c))
        else:
            session = _session(c, rng, s, c.compose())
        q = session[-1]
        if q.text in used or q.text in head_texts or not (len(rows) < n_amb) == is_ambiguous_query(q.words):
            continue
        used.add(q.text)
        hist = [(normalize_query(c.render(h)), h) for h in session[:-1] if h.text != q.text][-s.history_k:]
        rows.append(_labelled_row(c, rng, q, hist, notes.retrieve(q, s.days - 1, s.notes_m, rng)))
    if len(rows) < s.golden:
        logger.warning("golden: only %d of %d distinct queries", len(rows), s.golden)
    return rows


def _labelled_row(
    c: Composer, rng: random.Random, q: Query, hist: list[tuple[str, Query]], notes: list[Note]
) -> dict[str, Any]:
    label = label_query(q.words, [h.words for _, h in hist], [n.category for n in notes])
    query = normalize_query(c.render(q))
    errors = validation_errors(label, query)
    if errors:  # a bug in the world, never data: fail loudly
        raise AssertionError(f"invalid ground truth for {query!r}: {errors}")
    return {
        "query": query,
        "history": [t for t, _ in hist],
        "notes": [render_note_text(n) for n in notes],
        "label": dump_unified(label),
    }


def build_day(
    s: WorldSettings, day: int, head: list[tuple[Query, int]], reserved: set[str]
) -> list[LogEvent]:
    """One day of query-log events (exactly ``rows_per_day``), in time order."""
    date = s.dates()[day]
    rng = random.Random(f"{s.seed}:log:{day}")
    c = composer(s, rng, day)
    active = [(q, i) for i, (q, first) in enumerate(head) if first <= day]
    cum = list(itertools.accumulate(1.0 / (i + 1) ** s.zipf_s for _, i in active))
    platforms: dict[int, str] = {}
    day_start = dt.datetime.fromisoformat(date).replace(tzinfo=dt.timezone.utc)
    events: list[LogEvent] = []
    n_session = 0
    while len(events) < s.rows_per_day:
        n_session += 1
        user = rng.randrange(s.users)
        if user not in platforms:  # a user's device is stable across days
            platforms[user] = random.Random(f"{s.seed}:user:{user}").choices(PLATFORMS, PLATFORM_W)[0]
        platform = platforms[user]
        sid = f"s{date.replace('-', '')}{n_session:07d}"
        if rng.random() < s.ambiguous_share:
            amb = c.compose_ambiguous()
            while len(amb.words) > 2:
                amb = c.compose_ambiguous()
            session = _context_then_ambiguous(c, rng, amb)
        else:
            first = rng.choices(active, cum_weights=cum)[0][0] if rng.random() < s.head_share else c.compose()
            session = _session(c, rng, s, first)
        t = day_start + dt.timedelta(seconds=rng.uniform(0, 86400 - 600))
        history: list[tuple[str, Query]] = []
        for q in session:
            if len(events) >= s.rows_per_day:
                break
            if q.text in reserved:
                continue
            t += dt.timedelta(seconds=rng.uniform(3, 90))
            if rng.random() < s.malformed_rate:
                events.append(LogEvent(f"u{user:06d}", sid, t, malformed_query(rng, c, reserved), platform))
                continue
            raw = c.render(q)
            events.append(LogEvent(f"u{user:06d}", sid, t, raw, platform, q, list(history)))
            history.append((normalize_query(raw), q))
    events.sort(key=lambda e: (e.ts, e.session_id))
    return events


def build_annotations(
    s: WorldSettings, day: int, events: list[LogEvent], notes: NoteIndex, done: dict[str, int]
) -> list[dict[str, Any]]:
    """Annotated rows sampled from the day's log: new queries once each; ambiguous ones in several contexts;
    a share of the budget first to queries with a trending word (``drift.annotate_trending_share``)."""
    per_day = s.annotations_total // s.days + (1 if day < s.annotations_total % s.days else 0)
    rng = random.Random(f"{s.seed}:ann:{day}")
    c = composer(s, rng, day)
    valid = [e for e in events if e.query is not None]
    amb = [e for e in valid if is_ambiguous_query(e.query.words)]
    other = [e for e in valid if not is_ambiguous_query(e.query.words)]
    rng.shuffle(amb)
    rng.shuffle(other)
    n_amb = min(round(per_day * s.ambiguous_annotation_share), len(amb))
    chosen: list[LogEvent] = []

    def take(e: LogEvent, max_times: int) -> bool:
        key = e.query.text
        if done.get(key, 0) >= max_times:
            return False
        done[key] = done.get(key, 0) + 1
        chosen.append(e)
        return True

    for e in amb:
        if len(chosen) >= n_amb:
            break
        take(e, 8)
    # novelty-driven labelling: part of the budget goes first to queries with a trending word, round robin
    # over those words, so that every new word gets examples (not just the most frequent new ones)
    n_trend = len(chosen) + round((per_day - n_amb) * s.drift.annotate_trending_share)
    by_word: dict[str, list[LogEvent]] = {}
    for e in other:
        for w in e.query.words:
            if is_trending(w, day, s.drift.trend_days):
                by_word.setdefault(w.text, []).append(e)
    queues = {w: iter(es) for w, es in sorted(by_word.items())}
    while queues and len(chosen) < n_trend:
        for w in list(queues):
            if len(chosen) >= n_trend:
                break
            if not any(take(e, 1) for e in queues[w]):  # stops at the first event taken
                del queues[w]
    for e in other:
        if len(chosen) >= per_day:
            break
        take(e, 1)
    rows = []
    for e in chosen:
        hist = e.history[-s.history_k:] if s.history_k else []
        rows.append(_labelled_row(c, rng, e.query, hist, notes.retrieve(e.query, day, s.notes_m, rng)))
    return rows


# ---------------------------------------------------------------------------------------------- writing
def _write(table, path: Path) -> None:
    import pyarrow.parquet as pq

    if path.parent.exists():
        shutil.rmtree(path.parent)
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, compression="zstd")


def _log_table(events: list[LogEvent]):
    import pyarrow as pa

    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("event_time", pa.timestamp("us", tz="UTC")),
            ("query", pa.string()),
            ("platform", pa.string()),
        ]
    )
    return pa.table(
        {
            "user_id": [e.user_id for e in events],
            "session_id": [e.session_id for e in events],
            "event_time": [e.ts for e in events],
            "query": [e.raw for e in events],
            "platform": [e.platform for e in events],
        },
        schema=schema,
    )


def _labelled_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema(
        [("query", pa.string()), ("history", pa.list_(pa.string())), ("notes", pa.list_(pa.string())), ("label", pa.string())]
    )
    return pa.table({k: [r[k] for r in rows] for k in schema.names}, schema=schema)


def _notes_table(notes: list[Note]):
    import pyarrow as pa

    schema = pa.schema(
        [
            ("note_id", pa.string()),
            ("title", pa.string()),
            ("body", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("category", pa.string()),
            ("created_dt", pa.string()),
        ]
    )
    return pa.table(
        {
            "note_id": [n.note_id for n in notes],
            "title": [n.title for n in notes],
            "body": [n.body for n in notes],
            "tags": [list(n.tags) for n in notes],
            "category": [n.category for n in notes],
            "created_dt": [n.created_dt for n in notes],
        },
        schema=schema,
    )


def generate(
    out_root: Path | str | None = None,
    seed: int | None = None,
    days: int | None = None,
    rows_per_day: int | None = None,
    start_date: str | None = None,
    *,
    settings: WorldSettings | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Write raw/query_log/dt=*, raw/notes, raw/annotations/dt=*, raw/golden under ``out_root``.

    Arguments left None come from ``conf/world.yaml`` (or ``settings``); extra keyword arguments override
    other settings (``annotations_total=300``). Returns a summary (row counts per dataset, paths).
    """
    from qp_core.paths import lake_root

    base = settings or load_world_settings()
    upd = {k: v for k, v in dict(seed=seed, days=days, rows_per_day=rows_per_day, start_date=start_date, **overrides).items() if v is not None}
    s = WorldSettings.model_validate({**base.model_dump(), **upd})
    root = Path(out_root) if out_root is not None else lake_root()
    say = progress or (lambda msg: logger.info(msg))

    notes = make_notes(s.notes, s.seed, s.start_date, s.days,
                       make_composer=lambda rng, day: composer(s, rng, day))
    index = NoteIndex(notes)
    _write(_notes_table(notes), root / NOTES / "part-00000.parquet")
    say(f"notes: {len(notes)}")

    head = build_head(s)
    head_texts = {q.text for q, _ in head}
    golden = build_golden(s, head_texts, index)
    reserved = {compact(r["query"]) for r in golden}
    _write(_labelled_table(golden), root / GOLDEN / "part-00000.parquet")
    say(f"golden: {len(golden)} (head {len(head)})")

    summary: dict[str, Any] = {"root": str(root), "notes": len(notes), "golden": len(golden), "days": {}}
    done: dict[str, int] = {}
    for day, date in enumerate(s.dates()):
        events = build_day(s, day, head, reserved)
        _write(_log_table(events), root / QUERY_LOG / f"dt={date}" / "part-00000.parquet")
        ann = build_annotations(s, day, events, index, done)
        _write(_labelled_table(ann), root / ANNOTATIONS / f"dt={date}" / "part-00000.parquet")
        summary["days"][date] = {"query_log": len(events), "annotations": len(ann)}
        say(f"{date}: query_log {len(events)} rows, annotations {len(ann)}")
    return summary
