"""Query composition: domain frames over the lexicon, session refinements, and the raw surface text.

A query is a list of lexicon ``Word``s (its ground-truth segmentation); ``render`` turns it into what a
user types (random spaces, upper/title case Latin, the odd full-width character), which normalises back
to exactly the words' concatenation. Frames are per domain so the words in a query belong together
("雅诗兰黛 1c1 粉底液", "成都 太古里 citywalk", "原神 配队 攻略").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from qp_core.normalize import compact
from qp_core.schema import taxonomy_labels
from qp_core.world.drift import is_trending
from qp_core.world.labels import spans_consistent
from qp_core.world.lexicon import AMBIGUOUS, EVAL, INTENT, QUAL, STOP, Lexicon, Word, lexicon

# Share of queries per domain on a lifestyle SNS (beauty, fashion, food and travel lead).
DOMAIN_WEIGHTS = {
    "美妆/彩妆": 10, "美妆/护肤": 8, "时尚/穿搭": 10, "时尚/鞋靴箱包": 6, "美食/探店": 8, "美食/食谱": 6,
    "旅行/目的地": 8, "旅行/酒店民宿": 4, "数码/手机": 6, "数码/电脑": 4, "游戏/手游": 6, "娱乐/明星": 6,
    "家居/装修": 5, "母婴/育儿": 4, "健身/运动": 5, "宠物/猫狗": 4,
}
TRAVEL_GAME = {"旅行/目的地", "旅行/酒店民宿", "游戏/手游", "美食/探店"}
# domains where shopping qualifiers (平价, 学生党, 新款…) and price/comparison intents make sense
SHOPPING = {
    "美妆/彩妆", "美妆/护肤", "时尚/穿搭", "时尚/鞋靴箱包", "数码/手机", "数码/电脑", "家居/装修", "母婴/育儿",
    "健身/运动", "宠物/猫狗", "旅行/酒店民宿",
}
NON_SHOPPING_INTENTS = {"推荐", "怎么样", "合集", "避雷", "测评"}
HOWTO = {"美妆/彩妆", "美食/食谱", "健身/运动", "家居/装修", "美妆/护肤"}


@dataclass(frozen=True)
class Query:
    """A composed query: its words (the segmentation) and the domain it was composed for."""

    words: tuple[Word, ...]
    domain: str

    @property
    def text(self) -> str:
        """The normalised, whitespace-free query (what labels are written over)."""
        return "".join(w.text for w in self.words)


@dataclass
class DomainPack:
    brands: list[tuple[Word, list[Word], list[Word]]]  # (brand, aliases, series of this domain)
    ptypes: list[Word]
    topics: list[Word]
    quals: list[Word]
    intents: list[Word]
    persons: list[Word]
    ips: list[Word]
    pois: list[Word]


def domain_packs(lex: Lexicon | None = None) -> dict[str, DomainPack]:
    """The words of each domain, by slot (cached on the lexicon: a drifted lexicon has its own packs)."""
    lex = lex or lexicon()
    if "packs" not in lex.packs_cache:
        lex.packs_cache["packs"] = _build_packs(lex)
    return lex.packs_cache["packs"]


def _build_packs(lex: Lexicon) -> dict[str, DomainPack]:
    packs = {}
    for d in taxonomy_labels():
        brands = []
        for b in lex.brands:
            ser = [s for s in lex.series[b.text] if s.label == d]
            if b.label == d or ser:
                brands.append((b, lex.aliases[b.text], ser))
        intents = [w for w in lex.intents[""] if d in SHOPPING or w.text in NON_SHOPPING_INTENTS]
        if d in TRAVEL_GAME:
            intents += lex.intents["travel_game"]
        if d in HOWTO:
            intents += lex.intents["howto"]
        packs[d] = DomainPack(
            brands=brands,
            ptypes=lex.ptypes.get(d, []),
            topics=lex.topics.get(d, []),
            quals=(lex.quals[""] if d in SHOPPING else []) + lex.quals.get(d, []),
            intents=intents,
            persons=[p for p in lex.persons if p.label == d],
            ips=[i for i in lex.ips if i.label == d],
            pois=[p for p in lex.pois if p.label == d],
        )
    return packs


class Composer:
    """Draws queries for one day (words with ``first_day`` > day are not yet in use).

    ``trend_boost``/``trend_days``: a word that first appeared less than ``trend_days`` days ago is picked
    ``1 + trend_boost`` times as often as an established word of the same slot (qp_core.world.drift).
    """

    def __init__(self, rng: random.Random, day: int, lex: Lexicon | None = None, *,
                 trend_boost: float = 0.0, trend_days: int = 0):
        self.rng = rng
        self.day = day
        self.lex = lex or lexicon()
        self.trend_boost = trend_boost
        self.trend_days = trend_days
        self.packs = domain_packs(self.lex)
        self.domains = list(DOMAIN_WEIGHTS)
        self.domain_w = [DOMAIN_WEIGHTS[d] for d in self.domains]

    # ------------------------------------------------------------------ helpers
    def _ok(self, w: Word) -> bool:
        return w.first_day <= self.day

    def _weight(self, w: Word) -> float:
        return 1.0 + self.trend_boost if is_trending(w, self.day, self.trend_days) else 1.0

    def pick(self, words: Sequence[Word]) -> Word | None:
        cands = [w for w in words if self._ok(w)]
        if not cands:
            return None
        if self.trend_boost and any(w.first_day > 0 for w in cands):
            return self.rng.choices(cands, [self._weight(w) for w in cands])[0]
        return self.rng.choice(cands)

    def maybe(self, p: float, words: Sequence[Word]) -> list[Word]:
        if self.rng.random() < p:
            w = self.pick(words)
            return [w] if w else []
        return []

    def domain(self) -> str:
        return self.rng.choices(self.domains, self.domain_w)[0]

    # ------------------------------------------------------------------ frames
    def _brand_frame(self, d: str, pk: DomainPack) -> list[Word] | None:
        avail = [b for b in pk.brands if self._ok(b[0])]
        if not avail:
            return None
        if self.trend_boost and any(b[0].first_day > 0 for b in avail):
            brand, aliases, series = self.rng.choices(avail, [self._weight(b[0]) for b in avail])[0]
        else:
            brand, aliases, series = self.rng.choice(avail)
        bword = self.rng.choice(aliases) if aliases and self.rng.random() < 0.3 else brand
        out = [bword]
        ser = self.pick(series) if series and self.rng.random() < 0.55 else None
        if ser:
            if self.rng.random() < 0.25:
                out = []  # the series alone: "1c1 粉底液", "990v6"
            out.append(ser)
            if self.rng.random() < 0.45:
                out += [w for w in self.lex.ptypes.get(ser.label, []) if w.text == ser.ptype and self._ok(w)][:1]
        elif self.rng.random() < 0.6:
            # the brand's own product types (those of its series), else its domain's when it has no series
            own = {s.ptype for s in self.lex.series.get(brand.text, [])}
            if own:
                pt = self.pick([w for ws in self.lex.ptypes.values() for w in ws if w.text in own and w.label == d])
                out += [pt] if pt else []
            elif d not in ("美食/探店", "旅行/酒店民宿") and pk.ptypes:
                out.append(self.pick(pk.ptypes))
        out = self.maybe(0.15, pk.quals) + out
        return out + self.maybe(0.55, pk.intents)

    def _ptype_frame(self, d: str, pk: DomainPack) -> list[Word] | None:
        pt = self.pick(pk.ptypes)
        if not pt:
            return None
        quals = self.maybe(0.5, pk.quals)
        if quals and self.rng.random() < 0.2:
            quals.append(Word("的", STOP))
        topic = self.maybe(0.15, pk.topics)
        return quals + [pt] + topic + self.maybe(0.6, pk.intents)

    def _topic_frame(self, d: str, pk: DomainPack) -> list[Word] | None:
        t = self.pick(pk.topics)
        if not t:
            return None
        head: list[Word] = []
        if d in ("旅行/目的地", "旅行/酒店民宿", "美食/探店") and self.rng.random() < 0.7:
            head = [self.pick(self.lex.locations)]  # type: ignore[list-item]
        quals = self.maybe(0.4, pk.quals)
        return head + quals + [t] + self.maybe(0.45, pk.intents)

    def _place_frame(self, d: str, pk: DomainPack) -> list[Word] | None:
        poi = self.pick(pk.pois) if pk.pois and self.rng.random() < 0.6 else None
        out: list[Word] = []
        if poi:
            if self.rng.random() < 0.5:
                out.append(next(w for w in self.lex.locations if w.text == poi.home))
            out.append(poi)
        else:
            out.append(self.pick(self.lex.locations))  # type: ignore[arg-type]
            if d == "美食/探店":
                out += self.maybe(0.6, pk.ptypes)
        out += self.maybe(0.5, pk.topics if d != "美食/探店" or poi else pk.topics[:1])
        return out + self.maybe(0.3, pk.quals) + self.maybe(0.5, pk.intents)

    def _person_frame(self, d: str, pk: DomainPack) -> list[Word] | None:
        p = self.pick(pk.persons)
        if not p:
            return None
        if d == "娱乐/明星":
            r = self.rng.random()
            if r < 0.35:
                return [p] + self.maybe(1.0, pk.topics)
            if r < 0.6:  # celebrity look: 刘亦菲 同款 口红 / 刘亦菲 穿搭
                if self.rng.random() < 0.5:
                    return [p, Word("同款", INTENT), self.pick(self.lex.ptypes["美妆/彩妆"])]  # type: ignore[list-item]
                return [p] + [w for w in self.lex.topics["时尚/穿搭"] if w.text == "穿搭" and self._ok(w)]
            return [p] + self.maybe(0.5, pk.intents + self.lex.evals)
        # KOL of a domain: 李佳琦 推荐 粉底液
        return [p] + self.maybe(0.5, [w for w in pk.intents if w.text in ("推荐", "同款", "教程", "合集")]) + self.maybe(
            0.5, pk.ptypes or pk.topics
        )

    def _ip_frame(self, d: str, pk: DomainPack) -> list[Word] | None:
        ip = self.pick([i for i in pk.ips if i.text not in AMBIGUOUS] if self.rng.random() < 0.9 else pk.ips)
        if not ip:
            return None
        out = [ip] + self.maybe(0.55, pk.topics)
        if self.rng.random() < 0.08:
            out += [w for w in self.lex.topics["时尚/穿搭"] if w.text == "穿搭" and self._ok(w)]
        return out + self.maybe(0.5, pk.intents + self.lex.evals)

    def ambiguous(self, text: str | None = None) -> list[Word]:
        """An ambiguous word with neutral modifiers only: its sense must come from the context."""
        text = text or self.rng.choice(list(AMBIGUOUS))
        kind = AMBIGUOUS[text][0].kind
        out = [Word(text, kind, AMBIGUOUS[text][0].label)]
        r = self.rng.random()
        neutral = self.lex.intents[""] + self.lex.quals[""]
        if r < 0.25:
            return out
        if r < 0.8:
            return out + self.maybe(1.0, neutral)
        return self.maybe(1.0, self.lex.quals[""]) + out + self.maybe(1.0, self.lex.intents[""] + self.lex.evals)

    def _decorate(self, words: list[Word]) -> list[Word]:
        r = self.rng.random()
        if r < 0.05:
            words = [Word(self.rng.choice(["有没有", "求"]), STOP)] + words
        if self.rng.random() < 0.06:
            w = self.pick(self.lex.evals)
            if w:
                words = words + [w]
        r = self.rng.random()
        if r < 0.03:
            words = words + [Word(self.rng.choice(["吗", "呀"]), STOP)]
        elif r < 0.07:
            words = words + [self.rng.choice(self.lex.puncts)]
        return words

    FRAMES = ("_brand_frame", "_ptype_frame", "_topic_frame", "_place_frame", "_person_frame", "_ip_frame")
    FRAME_W = (30, 25, 18, 10, 9, 8)

    def compose(self, domain: str | None = None, *, tries: int = 30) -> Query:
        """One query for ``domain`` (random by SNS share when None)."""
        d = domain or self.domain()
        pk = self.packs[d]
        for _ in range(tries):
            frame = self.rng.choices(self.FRAMES, self.FRAME_W)[0]
            if frame == "_place_frame" and d not in ("旅行/目的地", "美食/探店", "旅行/酒店民宿"):
                continue
            words = getattr(self, frame)(d, pk)
            if not words or any(w is None for w in words):
                continue
            words = self._decorate(words)
            q = Query(tuple(words), d)
            if self.valid(q):
                return q
        w = self.pick(pk.ptypes) or self.pick(pk.topics) or self.pick(self.lex.locations)
        return Query((w,), d)  # type: ignore[arg-type]

    def compose_ambiguous(self, text: str | None = None) -> Query:
        for _ in range(30):
            words = self.ambiguous(text)
            q = Query(tuple(words), "")
            if self.valid(q):
                return q
        return Query((Word(text or "苹果", "brand", "数码/手机"),), "")

    @staticmethod
    def valid(q: Query) -> bool:
        """Has a content word with a label, no repeated text, spans agree with the segmentation."""
        texts = [w.text for w in q.words]
        if len(set(texts)) != len(texts) or len(q.text) > 24:
            return False
        if not any(w.label or w.text in AMBIGUOUS for w in q.words if w.kind not in (QUAL, INTENT, EVAL, STOP)):
            return False
        return spans_consistent(q.words)

    # ------------------------------------------------------------------ sessions
    def refine(self, q: Query) -> Query | None:
        """The user's next query in a session: narrower, broader, corrected or a related one."""
        words = list(q.words)
        d = q.domain or self.domain()
        pk = self.packs[d]
        op = self.rng.random()
        kinds = {w.kind for w in words}
        if op < 0.3 and INTENT not in kinds:
            words = words + self.maybe(1.0, pk.intents)
        elif op < 0.45 and sum(w.kind == QUAL for w in words) < 2 and q.domain:
            words = self.maybe(1.0, pk.quals) + words
        elif op < 0.6 and "brand" in kinds and "product_series" not in kinds:
            b = next(w for w in words if w.kind == "brand")
            canon = b.canonical or b.text
            ser = self.pick([s for s in self.lex.series.get(canon, []) if s.label == d] or self.lex.series.get(canon, []))
            if not ser:
                return None
            i = words.index(b)
            words = words[: i + 1] + [ser] + words[i + 1:]
        elif op < 0.7 and any(w.kind == "brand" and w.canonical and w.canonical != w.text for w in words):
            words = [
                next(x for x in self.lex.brands if x.text == w.canonical)
                if w.kind == "brand" and w.canonical and w.canonical != w.text else w
                for w in words
            ]
        elif op < 0.78 and INTENT in kinds:
            words = [w for w in words if w.kind != INTENT]
        else:
            return self.compose(d)
        nq = Query(tuple(words), q.domain)
        return nq if self.valid(nq) and nq.text != q.text else None

    # ------------------------------------------------------------------ surface
    def render(self, q: Query) -> str:
        """What a user types: random spaces, Latin case variants, the odd full-width character."""
        parts: list[str] = []
        prev_ascii = False
        for i, w in enumerate(q.words):
            t = w.text
            is_ascii = t.isascii() and any(c.isalnum() for c in t)
            if is_ascii and self.rng.random() < 0.35:
                t = self._case(t)
            if i:
                p_space = 0.85 if (is_ascii and prev_ascii) else 0.45
                if self.rng.random() < p_space:
                    parts.append(" ")
            parts.append(t)
            prev_ascii = is_ascii
        s = "".join(parts)
        if self.rng.random() < 0.02:  # full-width Latin/digits (NFKC maps them back)
            s = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and c.isalnum() else c for c in s)
        if self.rng.random() < 0.05:
            s = " " + s + " "
        assert compact(s) == q.text, (s, q.text)
        return s

    def _case(self, t: str) -> str:
        if t.startswith("iphone") or t.startswith("ipad"):
            return "i" + t[1:].capitalize().replace("pro", "Pro")
        r = self.rng.random()
        if len(t) <= 4 or r < 0.4:
            return t.upper()
        return t.capitalize()
