"""Vocabulary drift: a seeded share of the entity vocabulary first appears on a later day.

Why: the paper's case against legacy QP pipelines is that they are "sensitive to domain shift and
long-tail traffic, a challenge amplified in social media where vocabulary and entities evolve rapidly",
and that "updates necessitate retraining". A world whose vocabulary is fixed from day 0 hides that: a model
fitted once on the first days would know every golden word. So ``drift.entity_share`` of the
*non-ambiguous* entity units — brands (with their aliases), product series, people (stars, KOLs), IPs
(games, dramas) and POIs — are moved to a ``first_day`` drawn evenly over days ``1 .. days-1``: new brands
and launches, new KOLs, trending games and dramas, newly popular spots. The golden set is drawn on the last
day, so it naturally contains words that an early snapshot never saw, while the daily annotations keep
teaching them to a model retrained on recent data.

What stays (mostly) stable and why: product types and topic words are the everyday vocabulary of the
domains and turn over slowly, so only ``common_share`` of them (new product categories such as 筋膜枪 or
冻干, a new topic) drift, never a topic word that names a category (穿搭, 育儿); locations, qualifiers and
intent words never drift (slang topics and evaluative slang already carry their own ``first_day`` in the
lexicon). Ambiguous words (苹果, 小米, 荣耀, 椰子, 奶油风)
stay from day 0: their difficulty is the context, not their novelty. A drifted brand brings its aliases on
the same day and its product series no earlier (a new brand launches with its lines); a series can also
drift on its own (a new line of an established brand). Words that already had a later ``first_day`` keep
the later of the two days.

``trend_boost``: a word in its first ``trend_days`` days (``day - first_day < trend_days``) is picked
``1 + trend_boost`` times as often as an established one of the same slot — new things trend, which is
also what gives a model retrained on the last days enough examples of them. ``annotate_trending_share``
of each day's annotation budget goes first to queries with a trending word (novelty-driven labelling), so
even a word that first appears on the last day is annotated a few times.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from functools import lru_cache

from pydantic import Field

from qp_core.config import Settings
from qp_core.world.lexicon import AMBIGUOUS, TOPIC, Lexicon, Word, lexicon

logger = logging.getLogger(__name__)

DRIFT_KINDS = ("brand", "product_series", "person", "ip", "poi")
COMMON_KINDS = ("product_type", TOPIC)


class DriftSettings(Settings):
    """``drift:`` in conf/world.yaml (keep the defaults here equal to the file's values)."""

    entity_share: float = Field(0.5, ge=0, le=1)  # share of drift-eligible entity units that appear later
    common_share: float = Field(0.2, ge=0, le=1)  # share of product-type and (non-slang) topic words that do
    trend_boost: float = Field(4.0, ge=0)  # extra pick weight of a word in its first trend_days days
    trend_days: int = Field(2, ge=0)
    # share of a day's (non-ambiguous) annotation budget spent first on queries with a trending word:
    # annotation teams label the new traffic the deployed models have not seen
    annotate_trending_share: float = Field(0.4, ge=0, le=1)


def _units(lex: Lexicon) -> list[tuple[str, ...]]:
    """Drift-eligible units (texts that appear together), in lexicon order: brand+aliases, series, person, ip, poi."""
    units: list[tuple[str, ...]] = []
    for b in lex.brands:
        if b.text not in AMBIGUOUS:
            units.append((b.text, *(a.text for a in lex.aliases.get(b.text, []) if a.text not in AMBIGUOUS)))
    for b in lex.brands:
        units.extend((s.text,) for s in lex.series.get(b.text, []) if s.text not in AMBIGUOUS)
    for group in (lex.persons, lex.ips, lex.pois):
        units.extend((w.text,) for w in group if w.text not in AMBIGUOUS)
    return units


def _common_units(lex: Lexicon) -> list[tuple[str, ...]]:
    """Product types and non-slang topic words (the slower-moving vocabulary), in lexicon order.

    Topic words that name a category (穿搭, 育儿, 探店, …) are the domains themselves and never new."""
    from qp_core.schema import taxonomy_labels

    names = {part for label in taxonomy_labels() for part in label.split("/")}
    words = [w for ws in lex.ptypes.values() for w in ws] + [w for ws in lex.topics.values() for w in ws]
    texts = dict.fromkeys(w.text for w in words
                          if w.text not in AMBIGUOUS and w.text not in names and not w.slang and w.first_day == 0)
    return [(t,) for t in texts]


def drift_days(lex: Lexicon, seed: int, days: int, entity_share: float, common_share: float = 0.0) -> dict[str, int]:
    """text -> the later first day of every drifted word (deterministic in ``seed``; empty if days < 2)."""
    if days < 2:
        return {}
    out: dict[str, int] = {}
    # separate streams: changing common_share leaves the entity drift as it was
    for purpose, units, share in (("drift", _units(lex), entity_share), ("drift:common", _common_units(lex), common_share)):
        rng = random.Random(f"{seed}:{purpose}")
        chosen = rng.sample(units, round(share * len(units)))
        # spread evenly over days 1..days-1 (round robin over a random order), so each later day brings news
        for i, unit in enumerate(chosen):
            day = 1 + i % (days - 1)
            for text in unit:
                out[text] = max(out.get(text, 0), day)
    # a drifted brand's series come no earlier than the brand
    for b in lex.brands:
        if b.text in out:
            for s in lex.series.get(b.text, []):
                if s.text not in AMBIGUOUS:
                    out[s.text] = max(out.get(s.text, 0), out[b.text])
    return out


def apply_drift(lex: Lexicon, day_of: dict[str, int]) -> Lexicon:
    """A copy of ``lex`` whose entity words listed in ``day_of`` get ``first_day = max(old, new)``."""
    if not day_of:
        return lex

    def move(w: Word) -> Word:
        if w.kind in DRIFT_KINDS + COMMON_KINDS and w.text in day_of and day_of[w.text] > w.first_day:
            return dataclasses.replace(w, first_day=day_of[w.text])
        return w

    def many(ws: list[Word]) -> list[Word]:
        return [move(w) for w in ws]

    return dataclasses.replace(
        lex,
        brands=many(lex.brands),
        aliases={k: many(v) for k, v in lex.aliases.items()},
        series={k: many(v) for k, v in lex.series.items()},
        ptypes={k: many(v) for k, v in lex.ptypes.items()},
        topics={k: many(v) for k, v in lex.topics.items()},
        pois=many(lex.pois),
        persons=many(lex.persons),
        ips=many(lex.ips),
        packs_cache={},  # the composer's domain packs are built from the drifted words
    )


@lru_cache(maxsize=8)
def drifted_lexicon(seed: int, days: int, entity_share: float, common_share: float = 0.0) -> Lexicon:
    """The lexicon of a world with these settings (cached: the same object for every composer of a run)."""
    day_of = drift_days(lexicon(), seed, days, entity_share, common_share)
    if day_of:
        per_day: dict[int, int] = {}
        for d in day_of.values():
            per_day[d] = per_day.get(d, 0) + 1
        logger.info("vocabulary drift: %d words appear on a later day, per first day %s", len(day_of),
                    dict(sorted(per_day.items())))
    return apply_drift(lexicon(), day_of)


def world_lexicon(settings) -> Lexicon:
    """The lexicon of the world ``settings`` (a ``WorldSettings``) describes, drift applied."""
    d = settings.drift
    return drifted_lexicon(settings.seed, settings.days, d.entity_share, d.common_share)


def is_trending(w: Word, day: int, trend_days: int) -> bool:
    """A word that first appeared less than ``trend_days`` days before ``day`` (never a day-0 word)."""
    return 0 < w.first_day <= day and day - w.first_day < trend_days
