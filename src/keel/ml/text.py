"""Deterministic text analysis for grounding checks: sentences, claims, numbers, entities, cues.

Pure Python, no models, no I/O. Used by the grounding evaluators (``keel.evals.grounding``) and
by the gateway's semantic cache to verify that a cached answer still fits a new prompt (same
numbers, same names, same polarity). Everything here is public and stable:

>>> split_sentences("Dr. Rowe joined in 2011. She left in 2015!")
['Dr. Rowe joined in 2011.', 'She left in 2015!']
>>> [q.value for q in extract_quantities("It costs $1,200 for 3 days, about 15%.")]
[1200.0, 3.0, 15.0]
>>> extract_entities("Lina Voss founded Arborel Labs in Oslo.")
['Lina Voss', 'Arborel Labs', 'Oslo']
>>> is_negated("The device does not support Bluetooth.")
True
>>> sorted(quantifier_cues("It always works, except on Sundays."))
['always', 'except']

Heuristics, not parsing: entity spans are capitalised runs, negation is a cue-word test. They
are meant to compare two texts (an answer against its context), where the same heuristic applied
to both sides cancels most of its errors.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ANTONYMS",
    "CONDITION_CUES",
    "HEDGE_CUES",
    "NEGATION_CUES",
    "STOPWORDS",
    "UNIVERSAL_CUES",
    "Quantity",
    "antonym_conflicts",
    "condition_cues",
    "content_tokens",
    "extract_claims",
    "extract_dates",
    "extract_entities",
    "extract_numbers",
    "extract_quantities",
    "hedge_cues",
    "is_factual",
    "is_negated",
    "negation_cues",
    "normalize",
    "quantifier_cues",
    "split_sentences",
    "stem",
    "tokenize",
]

STOPWORDS = frozenset(
    """a an the and or but if of at by for with about against between into through during before
    after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such nor only own same
    so than too very s t can will just don should now i me my myself we our ours ourselves you
    your yours yourself yourselves he him his himself she her hers herself it its itself they
    them their theirs themselves what which who whom this that these those am is are was were be
    been being have has had having do does did doing would could might must shall may also as
    well yes yeah oh ok okay really like know think one get got go going there's it's that's i'm
    you're he's she's they're we're i've you've isn't aren't wasn't weren't hasn't haven't
    hadn't doesn't don't didn't won't wouldn't can't couldn't shouldn't let's us much many lot
    lots thing things something anything everything still even though although because while
    since until unless whether either neither not no never none nothing cannot""".split()  # noqa: SIM905
)

NEGATION_CUES = frozenset(
    """not no never none nobody nothing neither nor nowhere cannot without lacks lack lacking fails
    failed fail refuses refused unable""".split()  # noqa: SIM905
)
UNIVERSAL_CUES = frozenset(
    """always never all every everyone everybody everything everywhere none nobody only solely
    exclusively any anytime whenever guaranteed""".split()  # noqa: SIM905
)
CONDITION_CUES = frozenset(
    """if unless except excluding only when whenever provided providing until before after while
    but however although though other apart subject case long""".split()  # noqa: SIM905
)
HEDGE_CUES = frozenset(
    """some sometimes usually often may might can could typically generally most mostly partially
    partly occasionally rarely several many certain limited up""".split()  # noqa: SIM905
)

_ABBREV = frozenset(
    """mr mrs ms dr prof st jr sr inc ltd co corp vs etc e.g i.e u.s u.k no fig approx dept est mt
    ft""".split()  # noqa: SIM905
)
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z][A-Za-z0-9]*)*(?:['’][A-Za-z]+)?(?:[.,][0-9]+)*")
_SPLIT_RE = re.compile(
    r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])|(?<=[a-z0-9][.!?])(?=[A-Z][a-z])|\n+"
)


def normalize(text: str) -> str:
    """NFKC, lower-case, straight quotes, collapsed whitespace."""
    t = unicodedata.normalize("NFKC", text)
    t = t.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    t = t.replace("–", "-").replace("—", "-")
    return " ".join(t.lower().split())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (numbers keep their separators: ``1,200``, ``3.5``)."""
    return _WORD_RE.findall(text.lower().replace("’", "'"))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper (plural, -ed, -ing, -ly, -'s) so inflections match."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3 or w[0].isdigit():
        return w
    for suf, rep in (
        ("ies", "y"),
        ("ied", "y"),
        ("sses", "ss"),
        ("ness", ""),
        ("ment", ""),
        ("ingly", ""),
        ("edly", ""),
        ("ing", ""),
        ("ly", ""),
        ("ed", ""),
        ("es", ""),
        ("s", ""),
    ):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            if suf == "s" and w.endswith("ss"):
                return w
            w = w[: len(w) - len(suf)] + rep
            break
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # running -> runn -> run
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]  # 'produce' and 'produced' meet at 'produc'
    return w


def content_tokens(text: str | list[str]) -> list[str]:
    """Stemmed tokens without stop words (numbers kept); accepts a token list too."""
    toks = tokenize(text) if isinstance(text, str) else text
    return [stem(t) for t in toks if (t not in STOPWORDS and len(t) > 1) or t.isdigit()]


def split_sentences(text: str) -> list[str]:
    """Split into sentences; keeps common abbreviations (``Dr.``, ``U.S.``) and decimals intact.

    Also splits run-together sentences such as ``"...century.First for Women..."``.
    """
    text = text.strip()
    if not text:
        return []
    parts = [p.strip() for p in _SPLIT_RE.split(text) if p and p.strip()]
    out: list[str] = []
    for p in parts:
        if out:
            prev = out[-1]
            words = prev.rstrip(".!?\"')").split()
            last = words[-1].lower().rstrip(".") if words else ""
            if prev.endswith(".") and (last in _ABBREV or (len(last) == 1 and last.isalpha())):
                out[-1] = f"{prev} {p}"
                continue
        out.append(p)
    return out


_CLAUSE_RE = re.compile(
    r";\s+|\s+-\s+|,\s+(?:but|while|whereas|and\s+(?=[a-z]+\s+(?:is|was|are|were|has|had|will)\b))\s+"
)


def extract_claims(text: str, *, min_words: int = 3) -> list[str]:
    """Split a text into checkable claims: sentences, then ``;``/``but``/``while`` clauses.

    Fragments shorter than ``min_words`` words are merged into the previous claim.
    """
    claims: list[str] = []
    for sent in split_sentences(text):
        for part in _CLAUSE_RE.split(sent):
            part = part.strip(" ,;")
            if not part:
                continue
            if claims and len(part.split()) < min_words:
                claims[-1] = f"{claims[-1]} {part}"
            else:
                claims.append(part)
    return claims


# ---------------------------------------------------------------------------------------------
# numbers, units, dates

_NUM_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12, "half": 0.5,
    "twice": 2, "thrice": 3, "once": 1, "double": 2, "triple": 3, "quarter": 0.25,
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10,
}  # fmt: skip
_SCALES = {
    "thousand": 1e3,
    "k": 1e3,
    "million": 1e6,
    "m": 1e6,
    "mn": 1e6,
    "billion": 1e9,
    "bn": 1e9,
    "trillion": 1e12,
}
_UNITS = {
    "%": ("percent", 1.0), "percent": ("percent", 1.0), "per cent": ("percent", 1.0),
    "km": ("m", 1000.0), "kilometers": ("m", 1000.0), "kilometres": ("m", 1000.0),
    "m": ("m", 1.0), "meters": ("m", 1.0), "metres": ("m", 1.0), "cm": ("m", 0.01),
    "mm": ("m", 0.001), "miles": ("mi", 1.0), "mile": ("mi", 1.0),
    "kg": ("g", 1000.0), "kilograms": ("g", 1000.0), "g": ("g", 1.0), "grams": ("g", 1.0),
    "mg": ("g", 0.001), "tonnes": ("g", 1e6), "tons": ("g", 1e6),
    "hours": ("s", 3600.0), "hour": ("s", 3600.0), "hrs": ("s", 3600.0), "h": ("s", 3600.0),
    "minutes": ("s", 60.0), "minute": ("s", 60.0), "mins": ("s", 60.0), "min": ("s", 60.0),
    "seconds": ("s", 1.0), "second": ("s", 1.0), "secs": ("s", 1.0),
    "days": ("day", 1.0), "day": ("day", 1.0), "weeks": ("day", 7.0), "week": ("day", 7.0),
    "months": ("month", 1.0), "month": ("month", 1.0), "years": ("year", 1.0), "year": ("year", 1.0),
    "gb": ("byte", 1e9), "mb": ("byte", 1e6), "kb": ("byte", 1e3), "tb": ("byte", 1e12),
    "ms": ("s", 0.001), "ml": ("l", 0.001), "l": ("l", 1.0), "liters": ("l", 1.0), "litres": ("l", 1.0),
}  # fmt: skip
_CURRENCY = {
    "$": "usd",
    "€": "eur",
    "£": "gbp",
    "¥": "jpy",
    "usd": "usd",
    "eur": "eur",
    "gbp": "gbp",
    "dollars": "usd",
    "euros": "eur",
    "pounds": "gbp",
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        """january february march april may june july august september october november december""".split()  # noqa: SIM905
    )
}
_MONTHS.update({k[:3]: v for k, v in list(_MONTHS.items())})
_MONTHS["sept"] = 9

_NUM_RE = re.compile(
    r"(?P<cur>[$€£¥])?\s?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?:st|nd|rd|th)?"
    r"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|mn|k)\b)?"
    r"(?:\s?(?P<unit>%|(?:"
    + "|".join(
        sorted((k for k in [*_UNITS, *_CURRENCY] if k.isalpha() or " " in k), key=len, reverse=True)
    )
    + r")\b))?",
    re.IGNORECASE,
)
_DIGIT_RE = re.compile(r"\d")
_WORDNUM_RE = re.compile(
    r"\b(?P<w>"
    + "|".join(sorted(_NUM_WORDS, key=len, reverse=True))
    + r")(?:[-\s](?P<w2>one|two|three|four|five|six|seven|eight|nine))?\b"
    r"(?:\s(?P<scale>thousand|million|billion|trillion|hundred)\b)?"
    r"(?:\s(?P<unit>"
    + "|".join(sorted((k for k in _UNITS if k.isalpha() or " " in k), key=len, reverse=True))
    + r")\b)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Quantity:
    """A number found in text, with its unit normalised (``3 km`` -> value 3000, unit ``m``)."""

    value: float
    unit: str | None
    text: str
    raw: float  # the number as written, before unit conversion

    def matches(self, other: Quantity, *, rel_tol: float = 0.005) -> bool:
        """Same value (within rounding) and compatible units (a missing unit matches any)."""
        if self.unit and other.unit and self.unit != other.unit:
            return _close(self.raw, other.raw, rel_tol)
        return _close(self.value, other.value, rel_tol) or _close(self.raw, other.raw, rel_tol)


def _decimals(x: float) -> int:
    t = repr(float(x))
    return 0 if t.endswith(".0") else len(t.split(".")[1]) if "." in t else 0


def _close(a: float, b: float, rel_tol: float) -> bool:
    """Equal, or equal after rounding the more precise number to the other's precision
    (14.2 ~ 14, 3.47 ~ 3.5), or within ``rel_tol`` for large scaled values (1.5 million)."""
    if a == b:
        return True
    da, db = _decimals(a), _decimals(b)
    if da != db:
        lo, hi = (a, b) if da < db else (b, a)
        if round(hi, min(da, db)) == lo:
            return True
    big = max(abs(a), abs(b))
    return big >= 1e5 and abs(a - b) <= rel_tol * big


def extract_quantities(text: str, *, words: bool = True) -> list[Quantity]:
    """Numbers with currency, scale (thousand, million) and units; number words when ``words``.

    Ambiguous one-word numbers (``one``, ``once``, ``second``, ``half``) are skipped when they
    are most likely not quantities ("one of the", "second half").
    """
    out: list[Quantity] = []
    spans: list[tuple[int, int]] = []
    # _NUM_RE needs a digit; most sentences have none, and scanning them with its optional
    # currency prefix is the slow part.
    for m in _NUM_RE.finditer(text) if _DIGIT_RE.search(text) else ():
        raw = float(m.group("num").replace(",", ""))
        val = raw * _SCALES.get((m.group("scale") or "").lower(), 1.0)
        unit_word = (m.group("unit") or "").lower()
        unit: str | None = None
        if m.group("cur"):
            unit = _CURRENCY[m.group("cur")]
        elif unit_word in _UNITS:
            unit, factor = _UNITS[unit_word]
            val *= factor
        elif unit_word in _CURRENCY:
            unit = _CURRENCY[unit_word]
        out.append(Quantity(val, unit, m.group(0).strip(), raw))
        spans.append(m.span())
    if words:
        low = text.lower()
        for m in _WORDNUM_RE.finditer(low):
            if any(s <= m.start() < e for s, e in spans):
                continue
            w = m.group("w")
            if (
                w in {"one", "once", "second", "half", "first", "quarter", "double"}
                and not m.group("unit")
                and not m.group("scale")
            ):
                continue
            raw = float(_NUM_WORDS[w]) + (
                float(_NUM_WORDS[m.group("w2")]) if m.group("w2") else 0.0
            )
            scale = m.group("scale")
            if scale:
                raw *= 100 if scale == "hundred" else _SCALES[scale]
            val = raw
            unit = None
            unit_word = m.group("unit") or ""
            if unit_word in _UNITS:
                unit, factor = _UNITS[unit_word]
                val = raw * factor
            out.append(Quantity(val, unit, m.group(0), raw))
    return out


def extract_numbers(text: str) -> list[float]:
    """The numeric values in ``text`` (digits and number words), units applied."""
    return [q.value for q in extract_quantities(text)]


_DATE_RE = re.compile(
    r"\b(?:(?P<d1>\d{1,2})(?:st|nd|rd|th)?\s+(?P<m1>[A-Z][a-z]{2,8})\.?,?\s+(?P<y1>\d{4})"
    r"|(?P<m2>[A-Z][a-z]{2,8})\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y2>\d{4})"
    r"|(?P<m3>[A-Z][a-z]{2,8})\s+(?P<y3>\d{4})"
    r"|(?P<iso>\d{4}-\d{2}-\d{2}))\b"
)


def extract_dates(text: str) -> list[str]:
    """Dates as ISO-like strings: ``2 March 1991`` -> ``1991-03-02``; ``May 2004`` -> ``2004-05``."""
    out: list[str] = []
    for m in _DATE_RE.finditer(text):
        if m.group("iso"):
            out.append(m.group("iso"))
            continue
        mon = (m.group("m1") or m.group("m2") or m.group("m3") or "").lower()
        if mon not in _MONTHS:
            continue
        year = m.group("y1") or m.group("y2") or m.group("y3")
        day = m.group("d1") or m.group("d2")
        out.append(f"{year}-{_MONTHS[mon]:02d}" + (f"-{int(day):02d}" if day else ""))
    return out


# ---------------------------------------------------------------------------------------------
# entities

_CONNECTORS = frozenset(
    {
        "of",
        "de",
        "da",
        "del",
        "van",
        "von",
        "der",
        "la",
        "le",
        "du",
        "&",
        "the",
        "and",
        "y",
        "bin",
        "al",
    }
)
_CAP_RE = re.compile(
    r"[A-Z][\w'’.-]*|[0-9][\w'’-]*(?:\.[0-9]+)*|&|\b(?:of|de|da|del|van|von|der|la|le|du|the|and|y|bin|al)\b"
    r"|[^\sA-Za-z0-9]+|[a-z][\w'’-]*"
)
_NOT_ENTITY = frozenset(
    """i i'm i've i'd i'll the a an this that these those it its he she they we you my our your his
    her their there here what which who when where why how yes no not but and or if so also
    however although though while because since after before during then thus hence in on at for
    with from by to of as is are was were be been do does did have has had can could will would
    should may might must shall mr mrs ms dr prof sir lady oh well hey hi hello okay ok sure
    absolutely actually definitely indeed yeah nope great wow really interesting""".split()  # noqa: SIM905
)
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTH_WORDS = frozenset(list(_MONTHS) + _DAYS + [d + "s" for d in _DAYS])


def _emit(ents: list[str], cur: list[str], start: int, names: set[str]) -> None:
    """Append the span ``cur`` to ``ents`` unless it is no name (see extract_entities)."""
    if not cur:
        return
    span = " ".join(cur).strip(".'’-")
    low = span.lower()
    initial_only = start == 0 and len(cur) == 1 and not span.isupper()
    if (
        span
        and low not in _NOT_ENTITY
        and low not in _MONTH_WORDS
        and not all(w in _MONTH_WORDS or w in _CONNECTORS for w in low.split())
        and not (initial_only and low not in names and not (set(tokenize(low)) & names))
    ):
        ents.append(span)


def extract_entities(text: str, *, known: set[str] | frozenset[str] | None = None) -> list[str]:
    """Named-entity-like spans: runs of capitalised words (with ``of``/``van``/``de`` inside).

    A capitalised word that only starts a sentence ("Pets are not allowed") is no name unless
    it is followed by another capitalised word, is an acronym, or is capitalised elsewhere in
    the text (or listed, lower-cased, in ``known``). A short number right after a name belongs
    to it ("Nervi 2", "Python 3.8"). Month and weekday names are left to :func:`extract_dates`.
    """
    return [
        e
        for ents in entities_by_sentence(split_sentences(text) or [text], known=known)
        for e in ents
    ]


def entities_by_sentence(
    sents: list[str], *, known: set[str] | frozenset[str] | None = None
) -> list[list[str]]:
    """:func:`extract_entities` of a text already split into ``sents``, one list per sentence."""
    tokenized = [_CAP_RE.findall(s) for s in sents]
    names = {t.rstrip(".'’").lower() for toks in tokenized for t in toks[1:] if t[0].isupper()}
    if known:
        names |= set(known)
    out: list[list[str]] = []
    for toks in tokenized:
        ents: list[str] = []
        out.append(ents)
        cur: list[str] = []
        pending: list[str] = []
        start = 0
        for i, tok in enumerate(toks):
            if tok[0].isupper():
                word = tok.rstrip(".'’")
                if (word.lower() in _NOT_ENTITY or word.lower().endswith("n't")) and not cur:
                    continue
                if not cur:
                    start = i
                if cur and pending:
                    cur.extend(pending)
                pending = []
                cur.append(word)
                if tok.endswith(".") and len(word) > 2 and word.lower() not in _ABBREV:
                    _emit(ents, cur, start, names)
                    cur, pending = [], []
            elif (
                cur
                and not pending
                and (
                    (tok[0].isdigit() and not tok.isdigit() and len(tok) <= 4)
                    or (tok.isdigit() and len(tok) <= 2)
                )
            ):
                cur.append(tok.rstrip(".,"))  # "Nervi 2", "Python 3.8"
                _emit(ents, cur, start, names)
                cur, pending = [], []
            elif cur and tok in _CONNECTORS and len(pending) < 2:
                pending.append(tok)
            else:
                _emit(ents, cur, start, names)
                cur, pending = [], []
        _emit(ents, cur, start, names)
    return out


# ---------------------------------------------------------------------------------------------
# cues


def negation_cues(text: str | list[str]) -> list[str]:
    """The negation words in ``text`` (``n't`` counts as ``not``); accepts a token list too."""
    out: list[str] = []
    toks = tokenize(text) if isinstance(text, str) else text
    for i, t in enumerate(toks):
        if (
            t in {"no", "not"}
            and i + 2 < len(toks) + 1
            and toks[i + 1 : i + 2]
            and toks[i + 1] in _COMPARATIVES
        ):
            continue  # "no more than 8", "not later than"
        if t == "not" and toks[i + 1 : i + 2] == ["only"]:
            continue
        if t.endswith("n't"):
            out.append("not")
        elif t in NEGATION_CUES:
            out.append(t)
    return out


_ANTONYM_PAIRS = [
    ("open", "closed"), ("open", "shut"), ("allowed", "forbidden"), ("allowed", "banned"),
    ("allowed", "prohibited"), ("permitted", "forbidden"), ("permitted", "banned"),
    ("include", "exclude"), ("includes", "excludes"), ("included", "excluded"),
    ("accept", "reject"), ("accepted", "rejected"), ("increase", "decrease"),
    ("increased", "decreased"), ("rise", "fall"), ("rose", "fell"), ("more", "less"),
    ("more", "fewer"), ("before", "after"), ("north", "south"), ("east", "west"),
    ("win", "lose"), ("won", "lost"), ("added", "removed"), ("add", "remove"),
    ("enabled", "disabled"), ("enable", "disable"), ("start", "end"), ("first", "last"),
    ("higher", "lower"), ("above", "below"), ("over", "under"), ("maximum", "minimum"),
    ("true", "false"), ("required", "optional"), ("mandatory", "optional"), ("public", "private"),
    ("free", "paid"), ("supports", "lacks"), ("legal", "illegal"), ("possible", "impossible"),
    ("available", "unavailable"), ("success", "failure"), ("succeeded", "failed"),
    ("alive", "dead"), ("born", "died"), ("cheaper", "dearer"), ("faster", "slower"),
    ("larger", "smaller"), ("bigger", "smaller"), ("older", "younger"), ("early", "late"),
    ("earlier", "later"), ("inside", "outside"), ("domestic", "international"),
]  # fmt: skip
ANTONYMS: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    ANTONYMS[_a] = ANTONYMS.get(_a, frozenset()) | {_b}
    ANTONYMS[_b] = ANTONYMS.get(_b, frozenset()) | {_a}


def antonym_conflicts(a: str | list[str], b: str | list[str]) -> list[tuple[str, str]]:
    """Word pairs where ``a`` says one thing and ``b`` its opposite (open/closed, added/removed).

    Only words that occur on one side and not on the other count, so "open ... closed" in both
    texts is no conflict.
    """
    ta = set(tokenize(a) if isinstance(a, str) else a)
    tb = set(tokenize(b) if isinstance(b, str) else b)
    out: list[tuple[str, str]] = []
    for w in sorted(ta - tb):
        for o in sorted(ANTONYMS.get(w, ())):
            if o in tb and o not in ta:
                out.append((w, o))
    return out


_COMPARATIVES = frozenset(
    ["more", "less", "fewer", "later", "earlier", "longer", "shorter", "greater", "higher", "lower"]
)


def is_negated(text: str | list[str]) -> bool:
    """True when the text has an odd number of negation cues (a crude polarity test)."""
    return len(negation_cues(text)) % 2 == 1


def quantifier_cues(text: str | list[str]) -> set[str]:
    """Universal quantifiers and restrictors: always, never, all, every, only, except, unless..."""
    toks = set(tokenize(text) if isinstance(text, str) else text)
    return (toks & (UNIVERSAL_CUES | {"except", "unless"})) | (
        {"only"} if "only" in toks else set()
    )


def condition_cues(text: str) -> set[str]:
    """Words that limit a statement: if, unless, except, only, when, provided, until, before..."""
    low = normalize(text)
    toks = set(tokenize(low))
    out = toks & CONDITION_CUES
    out.discard("long")
    out.discard("case")
    out.discard("other")
    out.discard("apart")
    for phrase in (
        "as long as",
        "so long as",
        "in case",
        "other than",
        "apart from",
        "subject to",
        "as of",
    ):
        if phrase in low:
            out.add(phrase)
    return out


_PERSONAL = frozenset(
    """i i'm i've i'd i'll me my mine we we're our us you you're your yours let's""".split()  # noqa: SIM905
)
_QUESTION_START = frozenset(
    """who what when where why how which do does did is are can could would should will have has""".split()  # noqa: SIM905
)


def is_factual(claim: str) -> bool:
    """False for chit-chat that states no checkable fact: questions, and first- or second-person
    remarks ("I love that film!", "Do you like jazz?") that name nothing and give no number.

    Grounding checks skip such claims: a chatty opener needs no support in the context.
    """
    toks = tokenize(claim)
    if not toks:
        return False
    if claim.rstrip().endswith("?") or (toks[0] in _QUESTION_START and "?" in claim):
        return False
    if _PERSONAL.intersection(toks):
        return bool(extract_entities(claim) or extract_quantities(claim, words=False))
    return True


def hedge_cues(text: str | list[str]) -> set[str]:
    """Words that weaken a claim: some, sometimes, usually, may, most, up (to)..."""
    return set(tokenize(text) if isinstance(text, str) else text) & HEDGE_CUES
