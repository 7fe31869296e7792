"""Semantic cache: answer a paraphrase of a cached prompt, but never with a wrong answer.

A plain embedding-similarity threshold serves wrong answers: on Quora question pairs, MiniLM
cosine >= 0.95 still matches 1.9 % of *different* questions ("... learn Java?" vs "... learn
Python?") while catching only a fifth of the true paraphrases. This cache therefore decides in
two steps:

1. **Retrieve** the nearest cached prompts by MiniLM cosine (``keel.ml.embeddings``), within
   one partition: the scope (tenant, route, model, prompt version; see
   :class:`~keel.gateway.provider.CacheScope`) plus a hash of everything in the request except
   the last user message (system prompt, earlier turns, tools, temperature, response_format
   …). So only the last user turn is ever matched loosely; its context must match exactly, and
   a tenant never sees another tenant's entries.
2. **Verify** each candidate with :class:`Verifier`: hard rules (numbers, named entities and
   negation must agree) and then a learned decision: a small cross-encoder that reads both
   texts (``keel.ml.cross_encoder``, trained by ``tools/train_pair_verifier.py``), or, when its
   model file is missing, logistic regression over similarity and lexical-difference features
   (both fitted on the tuning half of QQP; see ``bench/semantic_cache.py`` and
   ``docs/bench-cache.md``). Only a candidate that passes is served.

Usage::

    cache = SemanticCache()                               # uses keel.ml.embeddings lazily
    hit = await cache.lookup(scope, body)                 # CacheHit(response, similarity) | None
    await cache.store(scope, body, response, ttl_s=600)

The vector index (:class:`VectorIndex`) is a per-partition float32 matrix searched by
brute-force dot product while small and by an inverted-file (IVF) index once it grows past
``ivf_min_rows``: centroids by k-means (retrained in a background thread as the partition
grows), ``nprobe`` nearest lists scanned, exact re-scoring. Removed and expired entries free
their rows for reuse, so a partition's memory follows its live entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from keel.gateway.cache import is_cacheable, normalize_request, scope_bytes
from keel.gateway.provider import Body, CacheHit, CacheScope
from keel.ml import text as mltext
from keel.ml.static_embeddings import MODEL_NAME as STATIC_MODEL_NAME

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("keel.gateway")


class TextEmbedder(Protocol):
    """Anything that turns texts into unit vectors (``keel.ml.embeddings.Embedder`` does)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An ``(n, d)`` float32 array of L2-normalised vectors."""
        ...


# --------------------------------------------------------------------------- prompt text


def query_text(request: Body) -> str | None:
    """The text matched semantically: the last user message (None if there is none)."""
    messages = request.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text":
                return None  # images, audio, files: only exact caching applies
            parts.append(str(p.get("text", "")))
        return "\n".join(parts)
    return None


def context_key(scope: CacheScope, request: Body) -> str:
    """Hash of the scope and of the request without its last user message."""
    norm = normalize_request(request)
    norm["messages"] = list(norm.get("messages") or [])[:-1]
    h = hashlib.sha256(scope_bytes(scope))
    h.update(b"\x1e")
    h.update(orjson.dumps(norm, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


# --------------------------------------------------------------------------- verification

_WH = ("what", "why", "how", "when", "where", "who", "which", "whom", "whose")
_VOCAB_SIZE = 30522
_DIGITS_RE = re.compile(r"\d")


@lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    """WordPiece vocabulary of the vendored MiniLM tokenizer (ids roughly follow frequency)."""
    from importlib import resources

    raw = resources.files("keel.assets").joinpath("minilm-tokenizer.json").read_bytes()
    vocab: dict[str, int] = orjson.loads(raw)["model"]["vocab"]
    return vocab


@lru_cache(maxsize=65536)
def rarity(word: str) -> float:
    """0 (very common) .. 1 (rare or not a single vocabulary word), from the vocab rank."""
    rank = _vocab().get(word)
    if rank is None or rank < 1996:  # unknown (split into pieces) or special/punctuation
        return 1.0
    return min(1.0, math.log(rank - 1995 + 1) / math.log(_VOCAB_SIZE - 1995))


@dataclass(frozen=True, slots=True)
class TextFacts:
    """What verification compares, computed once per text (at store and at lookup)."""

    text: str
    words: frozenset[str]
    content: dict[str, float]  # stemmed content word -> rarity of its rarest surface form
    numbers: frozenset[str]
    entity_words: frozenset[str]  # lower-cased capitalised words not opening a sentence
    negated: bool
    wh: str
    n_words: int


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORDS.update(
    {
        w: str(10 * (i + 3))
        for i, w in enumerate(["thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])
    }
)
_NUMBER_WORDS.update({"hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9"})
_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")
_CAP_RE = re.compile(r"(?:^|(?<=[\s(\"'/-]))([A-Z][A-Za-z0-9&'.-]*)")
_SENT_START_RE = re.compile(r"(?:^|[.!?]\s+|\n)\W*([A-Za-z][\w'.-]*)")
_NOT_NAMES = frozenset(
    [
        "i",
        "i'm",
        "i've",
        "i'd",
        "i'll",
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "it",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "what",
        "why",
        "how",
        "when",
        "where",
        "who",
        "which",
        "whom",
        "whose",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "if",
        "in",
        "on",
        "at",
        "for",
        "to",
        "of",
        "and",
        "or",
        "but",
        "not",
        "no",
        "yes",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
    ]
)


def _numbers(text: str, toks: list[str]) -> frozenset[str]:
    out = set()
    for m in _NUM_RE.findall(text):
        raw = m.replace(",", "")
        try:
            out.add(repr(float(raw)))
        except ValueError:
            out.add(raw)
    for t in toks:
        if t in _NUMBER_WORDS:
            out.add(repr(float(_NUMBER_WORDS[t])))
    return frozenset(out)


def _entity_words(text: str) -> frozenset[str]:
    starts = {m.group(1) for m in _SENT_START_RE.finditer(text)}
    out = set()
    for w in _CAP_RE.findall(text):
        w = w.rstrip(".'-")
        low = w.lower()
        if not w or low in _NOT_NAMES or low in mltext.STOPWORDS:
            continue
        if w in starts and not (len(w) > 1 and w.isupper()):
            continue  # a capital that only opens a sentence says nothing
        out.update(mltext.tokenize(low))
    return frozenset(out)


def text_facts(text: str) -> TextFacts:
    """Tokens, stems, numbers, entities, negation and question word of one text.

    Deliberately cheap (tens of microseconds): it runs on every lookup. Numbers are digit
    runs and number words; entities are capitalised words that do not open a sentence (and
    all-caps acronyms), compared case-insensitively against the other text's words, which
    tolerates the casing noise of real prompts.
    """
    toks = mltext.tokenize(text)
    content: dict[str, float] = {}
    for t in toks:
        if t in mltext.STOPWORDS or (len(t) < 2 and not t.isdigit()):
            continue
        st = mltext.stem(t)
        r = rarity(t)
        if r < content.get(st, 2.0):
            content[st] = r
    wh = next((t for t in toks[:4] if t in _WH), "")
    return TextFacts(
        text=text,
        words=frozenset(toks),
        content=content,
        numbers=_numbers(text, toks),
        entity_words=_entity_words(text),
        negated=bool(mltext.negation_cues(toks)),
        wh=wh,
        n_words=len(toks),
    )


FEATURES = (
    "cos",
    "cos_sq",
    "jaccard",
    "unmatched_rarity_sum",
    "unmatched_rarity_max",
    "unmatched_count",
    "len_diff",
    "wh_mismatch",
)


def pair_features(a: TextFacts, b: TextFacts, cos: float) -> list[float]:
    """The verifier's feature vector for a cached text ``a`` and a query ``b`` (see FEATURES)."""
    ca, cb = a.content, b.content
    inter = sum(1 for w in ca if w in cb)
    union = len(ca) + len(cb) - inter
    rar = [r for w, r in ca.items() if w not in cb] + [r for w, r in cb.items() if w not in ca]
    return [
        cos,
        cos * cos,
        inter / union if union else 1.0,
        sum(rar),
        max(rar, default=0.0),
        float(len(rar)),
        abs(math.log((a.n_words + 1) / (b.n_words + 1))),
        1.0 if a.wh != b.wh else 0.0,
    ]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a candidate may be served, and why not."""

    ok: bool
    reason: str
    score: float = 0.0


# Fitted by ``python bench/semantic_cache.py --fit`` (``--minilm qint8``: on the cosines of the
# int8-compute MiniLM the cache embeds with) on the tuning half of QQP, 0.6 % tune false-hit
# target, floor 0.80 (see docs/bench-cache.md); standardisation is folded into the weights.
DEFAULT_WEIGHTS: dict[str, float] = {
    "cos": -11.524230191176171,
    "cos_sq": 15.594109871912021,
    "jaccard": -1.2153548783262598,
    "unmatched_rarity_sum": 0.28922205199653944,
    "unmatched_rarity_max": -0.7730786858403864,
    "unmatched_count": -0.01047164812848286,
    "len_diff": 0.5209770914708067,
    "wh_mismatch": -0.11858848981128041,
}
DEFAULT_BIAS = -0.26432785033364614
DEFAULT_DECISION = 0.89

# The same model refitted on the static query encoder's cosines (``--embedder static``: floor
# chosen among 0.60/0.70/0.80 by out-of-fold tune recall, same 0.6 % tune target), used when
# candidates come from ``keel.ml.static_embeddings``: its cosines run lower and the MiniLM
# weights above, applied to them, let 1.4 % of non-duplicates through (docs/bench-cache.md).
STATIC_WEIGHTS: dict[str, float] = {
    "cos": 0.6282275555863606,
    "cos_sq": 3.0904343062966118,
    "jaccard": -0.1236267082478561,
    "unmatched_rarity_sum": -0.26057360118379896,
    "unmatched_rarity_max": -0.10059179616076948,
    "unmatched_count": 0.14336483531688837,
    "len_diff": -0.24703413398588556,
    "wh_mismatch": -0.2621171350088756,
}
STATIC_BIAS = -2.0864118572243138
STATIC_DECISION = 0.7925
STATIC_FLOOR = 0.60

# The same model fitted on the distilled 3-layer encoder's cosines (``--minilm l3 --fit``,
# tune half, same 0.6 % tune target, floor 0.80).
L3_WEIGHTS: dict[str, float] = {
    "cos": -21.73247076977325,
    "cos_sq": 20.046024323612837,
    "jaccard": -0.6959584391542346,
    "unmatched_rarity_sum": -0.11137509139411801,
    "unmatched_rarity_max": -0.42529977381073575,
    "unmatched_count": 0.26452584671111284,
    "len_diff": 0.1432356769302928,
    "wh_mismatch": -0.2193315832755729,
}
L3_BIAS = 4.603288859894557
L3_DECISION = 0.86
L3_FLOOR = 0.80

# Query encoders a cache can embed with (``[gateway.semantic_cache] encoder``): the name
# of a keel.ml.embeddings build, or None for the static token table.
ENCODERS: dict[str, str | None] = {"minilm": "qint8", "minilm-l3": "l3", "static": None}
DEFAULT_ENCODER = "minilm"


class PairModel(Protocol):
    """A pair classifier (``keel.ml.cross_encoder.CrossEncoder`` is one)."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """P(the two texts ask the same thing), one per ``(cached, query)`` pair."""
        ...


# Picked by ``python bench/semantic_cache.py --fit-ce`` on the validation slice of the tuning
# half (never on the test half); see docs/bench-cache.md.
DEFAULT_PAIR_FLOOR = 0.60  # MiniLM cosine
DEFAULT_PAIR_FLOOR_STATIC = 0.70  # cosine of the static embedder (keel.ml.static_embeddings)
DEFAULT_PAIR_DECISION = 0.8928  # val 1 % false-hit target, rules on, one order


@dataclass(slots=True)
class Verifier:
    """Hard agreement rules, then a learned decision.

    ``min_similarity`` is the retrieval floor (no candidate below it is considered). The rules
    reject a candidate whose numbers differ, whose named entities do not appear in the other
    text, or whose negation differs. Then, when ``pair_model`` is set (the cross-encoder, see
    :func:`default_verifier`), its probability must reach ``pair_decision``; otherwise a
    logistic model over :data:`FEATURES` must reach ``decision``. Raise either for fewer false
    hits, lower it for more hits.
    """

    min_similarity: float = 0.80
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    bias: float = DEFAULT_BIAS
    decision: float = DEFAULT_DECISION
    check_numbers: bool = True
    check_entities: bool = True
    check_negation: bool = True
    pair_model: PairModel | None = None
    pair_decision: float = DEFAULT_PAIR_DECISION

    def rules(self, a: TextFacts, b: TextFacts) -> str | None:
        """The first hard rule the pair breaks, or None."""
        if self.check_numbers and a.numbers != b.numbers:
            return "numbers"
        if self.check_entities and (a.entity_words - b.words or b.entity_words - a.words):
            return "entities"
        if self.check_negation and a.negated != b.negated:
            return "negation"
        return None

    def score(self, a: TextFacts, b: TextFacts, cos: float) -> float:
        """The logistic model's probability that ``b`` asks the same as ``a``."""
        f = pair_features(a, b, cos)
        z = self.bias + sum(self.weights.get(n, 0.0) * v for n, v in zip(FEATURES, f, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def verify(self, a: TextFacts, b: TextFacts, cos: float) -> Verdict:
        """Accept or reject serving ``a``'s answer for query ``b`` at similarity ``cos``."""
        return self.verify_many([(a, cos)], b)[0]

    def verify_many(
        self, cands: Sequence[tuple[TextFacts, float]], q: TextFacts, *, first_ok: bool = False
    ) -> list[Verdict]:
        """:meth:`verify` for several cached candidates of one query, best first.

        Candidates that fail the floor or the rules never reach the pair model. With
        ``first_ok`` the pair model runs one candidate at a time and the list ends at the
        first accepted one (a lookup serves that one, so judging the rest is wasted CPU);
        otherwise all remaining candidates are scored in one batched run.
        """
        out: list[Verdict | None] = []
        todo: list[int] = []
        for i, (a, cos) in enumerate(cands):
            if cos < self.min_similarity:
                out.append(Verdict(False, "similarity", 0.0))
            elif a.text == q.text:
                out.append(Verdict(True, "identical", 1.0))
            elif broken := self.rules(a, q):
                out.append(Verdict(False, broken, 0.0))
            else:
                out.append(None)
                todo.append(i)
        if first_ok:
            for i, v in enumerate(out):
                if v is not None and v.ok:
                    todo = [j for j in todo if j < i]
                    out = out[: i + 1]
                    break
        model = self.pair_model
        if todo and model is not None:
            groups = [[i] for i in todo] if first_ok else [todo]
            for group in groups:
                probs = model.score([(cands[i][0].text, q.text) for i in group])
                for i, p in zip(group, probs, strict=True):
                    ok = float(p) >= self.pair_decision
                    out[i] = Verdict(ok, "ok" if ok else "model", float(p))
                    if ok and first_ok:
                        return [v for v in out[: i + 1] if v is not None]
        else:
            for i in todo:
                p = self.score(cands[i][0], q, cands[i][1])
                out[i] = Verdict(p >= self.decision, "model" if p < self.decision else "ok", p)
        return [v for v in out if v is not None]


def logistic_verifier(model: str | None = None) -> Verifier:
    """The logistic verifier fitted on the cosines of the encoder named ``model`` (an
    embedder's ``.model``): each encoder's cosines run differently (the static table's lower),
    so each has its own floor and weights; an unknown name gets the six-layer MiniLM's fit."""
    from keel.ml import cache_encoder

    if model == STATIC_MODEL_NAME:
        return Verifier(
            min_similarity=STATIC_FLOOR,
            weights=dict(STATIC_WEIGHTS),
            bias=STATIC_BIAS,
            decision=STATIC_DECISION,
        )
    if model == cache_encoder.MODEL_NAME:
        return Verifier(
            min_similarity=L3_FLOOR, weights=dict(L3_WEIGHTS), bias=L3_BIAS, decision=L3_DECISION
        )
    return Verifier()


def default_verifier(*, static_retriever: bool = False, model: str | None = None) -> Verifier:
    """The logistic verifier, or the cross-encoder one when ``KEEL_CACHE_PAIR_MODEL`` names a
    model that loads (opt-in, none shipped: see :mod:`keel.ml.cross_encoder`).

    ``model``: the query encoder's name (:func:`logistic_verifier` picks its fit).
    ``static_retriever`` is the same as naming the static embedder
    (``keel.ml.static_embeddings``), whose cosines run lower than MiniLM's, so the retrieval
    floor is its own, and the logistic model its own fit (:data:`STATIC_WEIGHTS`).

    The fallback is logged once (``keel.ml`` logger) by
    :func:`keel.ml.cross_encoder.load_cross_encoder`, and again here so the gateway's log says
    what the cache decided.
    """
    from keel.ml.cross_encoder import load_cross_encoder

    ce = load_cross_encoder()
    if ce is None:
        from keel.ml.cross_encoder import default_model_path

        if default_model_path() is not None:  # configured but unusable: say so
            log.warning("semantic cache: cross-encoder missing, verifying with the logistic model")
        return logistic_verifier(STATIC_MODEL_NAME if static_retriever else model)
    static_retriever = static_retriever or model == STATIC_MODEL_NAME
    floor = DEFAULT_PAIR_FLOOR_STATIC if static_retriever else DEFAULT_PAIR_FLOOR
    return Verifier(min_similarity=floor, pair_model=ce, pair_decision=DEFAULT_PAIR_DECISION)


# --------------------------------------------------------------------------- vector index


class _Trained(NamedTuple):
    """What :meth:`VectorIndex._train` computes off the lock for :meth:`VectorIndex._install`."""

    centroids: np.ndarray
    order: np.ndarray  # snapshot positions sorted by list
    assign: np.ndarray  # list of each snapshot row
    pos: np.ndarray  # position of each row (in list order) within its list
    counts: np.ndarray  # rows per list
    lists: list[np.ndarray]  # row ids per list
    list_vecs: list[np.ndarray]  # their vectors, one contiguous block per list


class VectorIndex:
    """Unit vectors by row id, searched by inner product.

    Brute force (one vectorised matrix-vector product) below ``ivf_min_rows``; above it an
    IVF index: ``lists_per_sqrt * sqrt(n)`` k-means centroids trained on a sample, vectors kept
    in one contiguous block per list, ``nprobe`` lists scanned per query. Retrained when the
    number of live rows has doubled since the last training.

    A removed row leaves its IVF list at once (the list's last row takes its place) and its
    row id is reused by the next :meth:`add`, so a cache that keeps replacing entries (TTL
    expiry, eviction at ``max_entries``) stays at the size of its live rows: memory and search
    time follow the live entries, not every entry ever stored.

    With ``background=True`` the retraining (k-means and the assignment of every row, ~1-3 s
    at 100,000 rows) runs in a thread on a snapshot, and only its installation takes ``lock``
    (the caller's lock, held around every other call); until then searches use the previous
    lists or brute force. Rows added or removed meanwhile are reconciled at installation (a
    generation number per row tells a reused row from the one that was snapshotted).
    """

    def __init__(
        self,
        dim: int = 384,
        *,
        ivf_min_rows: int = 8192,
        nprobe: int = 12,
        lists_per_sqrt: float = 3.0,
        seed: int = 0,
        background: bool = False,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        import numpy as np

        self._np = np
        self.dim = dim
        self.ivf_min_rows = ivf_min_rows
        self.nprobe = nprobe
        self.lists_per_sqrt = lists_per_sqrt
        self._rng = np.random.default_rng(seed)
        # small at first (a partition per distinct context: most hold a few entries), doubled
        cap = 4
        self._vecs = np.zeros((cap, dim), dtype=np.float32)
        self._alive = np.zeros(cap, dtype=bool)
        self._gen = np.zeros(cap, dtype=np.int64)  # bumped at every add of a row
        self._n = 0  # rows ever used (high-water mark)
        self._free: list[int] = []  # removed rows, reused first
        self._n_alive = 0
        # IVF state: a row's list and position in it (-1: in no list)
        self._centroids: np.ndarray | None = None
        self._lists: list[np.ndarray] = []  # row ids per list
        self._list_vecs: list[np.ndarray] = []
        self._list_len: list[int] = []
        self._where = np.full(cap, -1, dtype=np.int64)
        self._pos = np.zeros(cap, dtype=np.int64)
        self._built_at = 0
        self._background = background
        self._lock = lock if lock is not None else threading.RLock()
        self._builder: threading.Thread | None = None
        self.builds = 0

    def __len__(self) -> int:
        return self._n_alive

    def _grow(self) -> None:
        np = self._np
        grow = len(self._vecs)
        self._vecs = np.concatenate([self._vecs, np.zeros((grow, self.dim), np.float32)])
        self._alive = np.concatenate([self._alive, np.zeros(grow, bool)])
        self._gen = np.concatenate([self._gen, np.zeros(grow, np.int64)])
        self._where = np.concatenate([self._where, np.full(grow, -1, np.int64)])
        self._pos = np.concatenate([self._pos, np.zeros(grow, np.int64)])

    def add(self, vec: np.ndarray) -> int:
        """Store a unit vector; returns its row id (a removed row's id may be reused)."""
        if self._free:
            row = self._free.pop()
        else:
            if self._n == len(self._vecs):
                self._grow()
            row = self._n
            self._n += 1
        self._vecs[row] = vec
        self._alive[row] = True
        self._gen[row] += 1
        self._n_alive += 1
        if self._centroids is not None:
            self._assign(row)
        if self._n_alive >= self.ivf_min_rows and self._n_alive >= 2 * self._built_at:
            if self._background:
                self._start_build()
            else:
                self.build()
        return row

    def remove(self, row: int) -> None:
        """Drop a row from every future search; its id becomes free for reuse."""
        if 0 <= row < self._n and self._alive[row]:
            self._alive[row] = False
            self._n_alive -= 1
            self._unassign(row)
            self._free.append(row)

    def _assign(self, row: int) -> None:
        np = self._np
        assert self._centroids is not None
        vec = self._vecs[row]
        c = int(np.argmax(self._centroids @ vec))
        n = self._list_len[c]
        if n == len(self._lists[c]):
            grow = max(16, n)
            self._lists[c] = np.concatenate([self._lists[c], np.zeros(grow, np.int64)])
            self._list_vecs[c] = np.concatenate(
                [self._list_vecs[c], np.zeros((grow, self.dim), np.float32)]
            )
        self._lists[c][n] = row
        self._list_vecs[c][n] = vec
        self._list_len[c] = n + 1
        self._where[row] = c
        self._pos[row] = n

    def _unassign(self, row: int) -> None:
        c = int(self._where[row])
        if c < 0:
            return
        p, last = int(self._pos[row]), self._list_len[c] - 1
        if p != last:  # the list's last row fills the hole
            moved = int(self._lists[c][last])
            self._lists[c][p] = moved
            self._list_vecs[c][p] = self._list_vecs[c][last]
            self._pos[moved] = p
        self._list_len[c] = last
        self._where[row] = -1

    # -- (re)training

    def build(self, *, iterations: int = 8, sample: int = 20_000) -> None:
        """(Re)train the IVF centroids with spherical k-means and re-assign every live row,
        in this thread."""
        snap = self._snapshot()
        if snap is not None:
            self._install(snap[1], self._train(snap[0], snap[2], iterations, sample))

    def wait_for_build(self, timeout: float | None = None) -> bool:
        """Wait for a background build to be installed; False if it is still running."""
        t = self._builder
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def _start_build(self) -> None:
        if self._builder is not None and self._builder.is_alive():
            return
        snap = self._snapshot()
        if snap is None:
            return
        self._built_at = len(snap[0])  # no second build until the live rows double again
        self._builder = threading.Thread(
            target=self._build_in_background, args=snap, name="keel-ivf-build", daemon=True
        )
        self._builder.start()

    def _build_in_background(self, rows: np.ndarray, gens: np.ndarray, vecs: np.ndarray) -> None:
        try:
            trained = self._train(rows, vecs, 8, 20_000)
            with self._lock:
                self._install(gens, trained)
        except Exception:  # the previous lists (or brute force) keep serving
            log.exception("semantic cache: IVF rebuild failed; the previous index stays in use")

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Live rows, their generations and the vector block they are read from (the block is
        only read later, off the lock: rows rewritten meanwhile are caught by the generation)."""
        rows = self._np.flatnonzero(self._alive[: self._n])
        if len(rows) < 2 * 64:
            return None
        return rows, self._gen[rows].copy(), self._vecs

    def _train(self, rows: np.ndarray, block: np.ndarray, iterations: int, sample: int) -> _Trained:
        """Centroids and the new lists for ``rows`` (everything but the swap; no shared state
        is written, so this runs off the lock)."""
        np = self._np
        vecs = block[rows]
        k = max(16, int(self.lists_per_sqrt * math.sqrt(len(rows))))
        sample = max(sample, 25 * k)
        data = vecs if len(rows) <= sample else vecs[self._rng.choice(len(rows), sample, False)]
        cent = data[self._rng.choice(len(data), min(k, len(data)), replace=False)].copy()
        for _ in range(iterations):
            assign = np.argmax(data @ cent.T, axis=1)
            sums = np.zeros_like(cent)
            np.add.at(sums, assign, data)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            empty = norms[:, 0] == 0
            sums[empty] = data[self._rng.choice(len(data), int(empty.sum()))]
            norms[empty] = 1.0
            cent = (sums / norms).astype(np.float32)
        assign = np.empty(len(rows), dtype=np.int64)
        for s in range(0, len(rows), 8192):
            assign[s : s + 8192] = np.argmax(vecs[s : s + 8192] @ cent.T, axis=1)
        k = len(cent)
        order = np.argsort(assign, kind="stable")
        counts = np.bincount(assign, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        lists, list_vecs = [], []
        for c in range(k):
            sel = order[starts[c] : starts[c] + counts[c]]
            lists.append(rows[sel].astype(np.int64))
            list_vecs.append(np.ascontiguousarray(vecs[sel]))
        pos = np.arange(len(rows)) - starts[assign[order]]
        return _Trained(cent, order, assign, pos, counts, lists, list_vecs)

    def _install(self, gens: np.ndarray, trained: _Trained) -> None:
        """Swap in trained lists (caller holds the lock): snapshot rows removed or rewritten
        since leave their lists, rows added since are assigned to the new centroids."""
        np = self._np
        cent, order, assign, pos, counts, lists, list_vecs = trained
        rows = np.concatenate(lists) if lists else np.zeros(0, np.int64)  # in list order
        self._where[: self._n] = -1
        self._where[rows] = assign[order]
        self._pos[rows] = pos
        self._lists, self._list_vecs = lists, list_vecs
        self._list_len = [int(c) for c in counts]
        self._centroids = cent
        stale = ~(self._alive[rows] & (self._gen[rows] == gens[order]))
        for row in rows[stale].tolist():
            self._unassign(row)  # removed, or reused for another vector: out of its old list
        self._built_at = max(self._built_at, len(rows) - int(stale.sum()))
        late = np.flatnonzero(self._alive[: self._n] & (self._where[: self._n] < 0))
        for row in late.tolist():
            self._assign(row)
        self.builds += 1

    def search(self, q: np.ndarray, k: int = 4, min_score: float = -1.0) -> list[tuple[int, float]]:
        """Up to ``k`` (row, score) pairs with score >= ``min_score``, best first."""
        np = self._np
        if self._n_alive == 0:
            return []
        if self._centroids is None:
            scores = self._vecs[: self._n] @ q
            scores[~self._alive[: self._n]] = -2.0
            cand_rows = None
        else:  # the lists hold live rows only
            cs = self._centroids @ q
            nprobe = min(self.nprobe, len(cs))
            probe = np.argpartition(cs, -nprobe)[-nprobe:]
            parts_s, parts_r = [], []
            for c in probe.tolist():
                n = self._list_len[c]
                if n:
                    parts_s.append(self._list_vecs[c][:n] @ q)
                    parts_r.append(self._lists[c][:n])
            if not parts_s:
                return []
            scores = np.concatenate(parts_s)
            cand_rows = np.concatenate(parts_r)
        kk = min(k, len(scores))
        top = np.argpartition(scores, -kk)[-kk:]
        top = top[np.argsort(-scores[top])]
        out = []
        for i in top.tolist():
            s = float(scores[i])
            if s < min_score:
                break
            out.append((i if cand_rows is None else int(cand_rows[i]), s))
        return out


# --------------------------------------------------------------------------- the cache


@dataclass(slots=True)
class _Entry:
    facts: TextFacts
    response: bytes
    expires_at: float
    size: int  # bytes it accounts for: the response, the text and its vector


class _Partition:
    def __init__(
        self, dim: int, ivf_min_rows: int, nprobe: int, lock: AbstractContextManager[Any]
    ) -> None:
        self.index = VectorIndex(
            dim, ivf_min_rows=ivf_min_rows, nprobe=nprobe, background=True, lock=lock
        )
        self.entries: dict[int, _Entry] = {}
        self.by_text: dict[str, int] = {}
        self.last_expiry = 0.0  # when its longest-lived entry expires


class SemanticCache:
    """Paraphrase-tolerant cache of ``chat.completion`` responses (in process).

    ``embedder`` defaults to the ``encoder``'s (:data:`ENCODERS`; loaded on first use): the
    six-layer int8 MiniLM (``"minilm"``, the default: the most hits), a 3-layer one distilled
    from it (``"minilm-l3"``: about half the CPU per lookup, ~25 % fewer hits) or the static
    token table (``"static"``); the verifier's default fit follows the encoder that loaded.
    ``ttl_s`` is the default time to live; ``max_entries`` bounds each partition (the oldest
    entries go first). ``top_k`` candidates are verified per lookup, best first. ``stats``
    counts hits, misses, rejections by reason and stores.

    A partition exists per distinct context (scope plus everything but the last user turn),
    so traffic whose system prompt varies per user makes one per request. Memory is bounded
    across partitions too: at most ``max_partitions`` partitions, ``max_total_entries``
    entries and ``max_bytes`` (responses, texts and vectors), the least recently used
    partition going first (``stats["evicted_partitions"]``);
    a partition whose entries have all expired is dropped when a store passes by it, and
    each store drops the expired entries at the old end of its own partition.
    """

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        *,
        encoder: str = DEFAULT_ENCODER,
        verifier: Verifier | None = None,
        ttl_s: float = 3600.0,
        max_entries: int = 100_000,
        top_k: int = 4,
        ivf_min_rows: int = 8192,
        nprobe: int = 12,
        max_partitions: int = 10_000,
        max_total_entries: int = 200_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if encoder not in ENCODERS:
            raise ValueError(
                f"unknown semantic cache encoder {encoder!r}: one of {', '.join(ENCODERS)}"
            )
        self._embedder = embedder
        self.encoder = encoder
        self.max_partitions = max_partitions
        self.max_total_entries = max_total_entries
        self.max_bytes = max_bytes
        self._n_entries = 0
        self._n_bytes = 0
        self._verifier = verifier  # None: default_verifier() on first use
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.top_k = top_k
        self._ivf_min_rows = ivf_min_rows
        self._nprobe = nprobe
        self._clock = clock
        self._parts: OrderedDict[str, _Partition] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()
        self.stats: dict[str, int] = {
            "hits": 0,
            "misses": 0,
            "stores": 0,
            "skipped": 0,
            "evicted_partitions": 0,
        }

    @property
    def verifier(self) -> Verifier:
        """The verifier; by default the cross-encoder one, loaded on first use (with a logged
        fallback to the logistic verifier when its model file is missing)."""
        if self._verifier is None:
            embedder = self.embedder  # the fit depends on which encoder actually loaded
            with self._lock:
                if self._verifier is None:
                    self._verifier = default_verifier(model=getattr(embedder, "model", None))
        return self._verifier

    @verifier.setter
    def verifier(self, value: Verifier) -> None:
        self._verifier = value

    @property
    def embedder(self) -> TextEmbedder:
        """The query encoder: the one passed in, else the ``encoder``'s (loaded on first use)."""
        if self._embedder is None:
            variant = ENCODERS[self.encoder]
            if variant is None:
                from keel.ml.static_embeddings import StaticEmbedder

                emb: TextEmbedder = StaticEmbedder()
            else:
                from keel.ml.embeddings import get_embedder

                emb = get_embedder(variant)  # type: ignore[arg-type]
            with self._lock:
                if self._embedder is None:
                    self._embedder = emb
        return self._embedder

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed(list(texts))

    # -- synchronous core (usable without an event loop)

    def lookup_sync(self, scope: CacheScope, request: Body) -> CacheHit | None:
        """Like :meth:`lookup`, blocking (embeds the query in this thread)."""
        text = query_text(request)
        if text is None:
            return None
        part_key = context_key(scope, request)
        with self._lock:
            part = self._parts.get(part_key)
            if part is None or not part.entries:
                self.stats["misses"] += 1
                return None
        vec = self._embed([text])[0]
        return self.lookup_vector(part_key, text, vec)

    def lookup_vector(self, part_key: str, text: str, vec: np.ndarray) -> CacheHit | None:
        """Search and verify with an already computed query vector."""
        qf = text_facts(text)
        now = self._clock()
        verifier = self.verifier
        with self._lock:
            part = self._parts.get(part_key)
            if part is None:
                self.stats["misses"] += 1
                return None
            self._parts.move_to_end(part_key)
            live: list[tuple[_Entry, float]] = []
            for row, sim in part.index.search(vec, self.top_k, verifier.min_similarity):
                e = part.entries.get(row)
                if e is None:
                    continue
                if e.expires_at <= now:
                    self._drop(part, row)
                    continue
                live.append((e, sim))
        # Verification (a cross-encoder run of a few ms) happens outside the lock; entries
        # are immutable, so a concurrent store or drop cannot change what is judged here.
        verdicts = verifier.verify_many([(e.facts, sim) for e, sim in live], qf, first_ok=True)
        with self._lock:
            for (e, sim), v in zip(live, verdicts, strict=False):
                if v.ok:
                    self.stats["hits"] += 1
                    return CacheHit(
                        response=orjson.loads(e.response),
                        similarity=sim,
                        encoder=getattr(self._embedder, "model", None),
                    )
                self.stats["reject_" + v.reason] = self.stats.get("reject_" + v.reason, 0) + 1
            self.stats["misses"] += 1
        return None

    def store_sync(
        self, scope: CacheScope, request: Body, response: Body, *, ttl_s: float | None = None
    ) -> bool:
        """Like :meth:`store`, blocking."""
        text = query_text(request)
        if text is None or not is_cacheable(response):
            self.stats["skipped"] += 1
            return False
        vec = self._embed([text])[0]
        return self.store_vector(context_key(scope, request), text, vec, response, ttl_s=ttl_s)

    def store_vector(
        self,
        part_key: str,
        text: str,
        vec: np.ndarray,
        response: Body,
        *,
        ttl_s: float | None = None,
    ) -> bool:
        """Insert with an already computed vector (a re-store of the same text replaces it)."""
        facts = text_facts(text)
        payload = orjson.dumps(response)
        expires = self._clock() + (self.ttl_s if ttl_s is None else ttl_s)
        now = self._clock()
        entry = _Entry(facts, payload, expires, len(payload) + 2 * len(text) + vec.nbytes)
        with self._lock:
            part = self._parts.get(part_key)
            if entry.size > self.max_bytes:  # never cached; an older answer to it is stale
                if part is not None and (old := part.by_text.get(text)) is not None:
                    self._drop(part, old)
                self.stats["skipped"] += 1
                return False
            if part is None:
                dim = int(vec.shape[0])
                part = self._parts[part_key] = _Partition(
                    dim, self._ivf_min_rows, self._nprobe, self._lock
                )
            else:
                self._parts.move_to_end(part_key)
            old = part.by_text.get(text)
            if old is not None:
                self._drop(part, old)
            # insertion order is age: expired and surplus entries leave from the old end
            while part.entries:
                first = next(iter(part.entries))
                if len(part.entries) < self.max_entries and part.entries[first].expires_at > now:
                    break
                self._drop(part, first)
            row = part.index.add(vec)
            part.entries[row] = entry
            part.by_text[text] = row
            part.last_expiry = max(part.last_expiry, expires)
            self._n_entries += 1
            self._n_bytes += entry.size
            self.stats["stores"] += 1
            self._enforce_bounds(part_key, now)
        return True

    def _enforce_bounds(self, current: str, now: float) -> None:
        """Drop fully expired partitions passed on the way, then the least recently used ones
        while over ``max_partitions`` or ``max_total_entries`` (caller holds the lock)."""
        for key in list(islice(self._parts, 2)):
            p = self._parts[key]
            if key != current and (not p.entries or p.last_expiry <= now):
                self._evict_partition(key)
        while (
            len(self._parts) > self.max_partitions
            or self._n_entries > self.max_total_entries
            or self._n_bytes > self.max_bytes
        ):
            key = next(iter(self._parts))
            if key == current:  # the only one left: its oldest entries go
                part = self._parts[key]
                if len(part.entries) <= 1:
                    break
                self._drop(part, next(iter(part.entries)))
                continue
            self._evict_partition(key)

    def _evict_partition(self, key: str) -> None:
        part = self._parts.pop(key)
        self._n_entries -= len(part.entries)
        self._n_bytes -= sum(e.size for e in part.entries.values())
        self.stats["evicted_partitions"] += 1

    def _drop(self, part: _Partition, row: int) -> None:
        e = part.entries.pop(row, None)
        if e is not None:
            self._n_entries -= 1
            self._n_bytes -= e.size
            part.index.remove(row)
            if part.by_text.get(e.facts.text) == row:
                del part.by_text[e.facts.text]

    def purge_expired(self) -> int:
        """Drop expired entries everywhere; returns how many."""
        now = self._clock()
        n = 0
        with self._lock:
            for key, part in list(self._parts.items()):
                for row in [r for r, e in part.entries.items() if e.expires_at <= now]:
                    self._drop(part, row)
                    n += 1
                if not part.entries:
                    del self._parts[key]
        return n

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Wait until no partition's index is being retrained in the background (tests and
        benchmarks; lookups never need to). False if one is still running at ``timeout``."""
        with self._lock:
            parts = list(self._parts.values())
        return all(p.index.wait_for_build(timeout) for p in parts)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._parts.clear()
            self._n_entries = 0
            self._n_bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return self._n_entries

    # -- async API (the gateway's Cache interface)

    async def lookup(self, scope: CacheScope, request: Body) -> CacheHit | None:
        """A verified cached answer for a paraphrase of this request in this scope, or None.

        Embedding runs in a worker thread so the event loop is not blocked.
        """
        if query_text(request) is None:
            return None
        part_key = context_key(scope, request)
        with self._lock:
            if part_key not in self._parts:
                self.stats["misses"] += 1
                return None
        return await asyncio.to_thread(self.lookup_sync, scope, request)

    async def store(
        self, scope: CacheScope, request: Body, response: Body, *, ttl_s: float | None = None
    ) -> bool:
        """Cache a complete response under the request's last user message."""
        return await asyncio.to_thread(self.store_sync, scope, request, response, ttl_s=ttl_s)


SEMANTIC_CACHE_KEYS = frozenset(
    {
        "max_entries",
        "max_partitions",
        "max_total_entries",
        "max_bytes",
        "top_k",
        "nprobe",
        "encoder",
    }
)


def build_semantic_cache(config: dict[str, Any] | None = None) -> SemanticCache:
    """A :class:`SemanticCache` from the ``[gateway.semantic_cache]`` table of ``keel.toml``.

    Keys (all optional): ``max_entries`` per partition (100,000), ``max_partitions``
    (10,000), ``max_total_entries`` (200,000), ``max_bytes`` (256 MiB: responses, texts and
    vectors), ``top_k`` candidates verified per lookup (4), ``nprobe`` IVF lists scanned (12).
    Time to live comes from each route's ``cache.ttl_s``.
    """
    from keel.errors import ConfigError

    cfg = dict(config or {})
    unknown = set(cfg) - SEMANTIC_CACHE_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key(s) in gateway.semantic_cache: {', '.join(sorted(unknown))}",
            hint=f"known keys: {', '.join(sorted(SEMANTIC_CACHE_KEYS))}",
        )
    kw: dict[str, Any] = {}
    if "encoder" in cfg:
        encoder = cfg.pop("encoder")
        if not isinstance(encoder, str) or encoder not in ENCODERS:
            raise ConfigError(
                f"gateway.semantic_cache.encoder must be one of {', '.join(ENCODERS)}, "
                f"not {encoder!r}",
                hint="minilm (default): six layers, the most hits; minilm-l3: about half the "
                "CPU per lookup, ~25 % fewer hits; static: ~0.1 ms, fewer still "
                "(docs/bench-cache.md)",
            )
        kw["encoder"] = encoder
    for key, value in cfg.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"gateway.semantic_cache.{key} must be a positive integer")
        kw[key] = value
    return SemanticCache(**kw)  # type: ignore[arg-type]


def describe(verifier: Verifier) -> dict[str, Any]:
    """The verifier's settings (for span attributes and the docs)."""
    return {
        "min_similarity": verifier.min_similarity,
        "decision": verifier.pair_decision if verifier.pair_model else verifier.decision,
        "model": "cross-encoder" if verifier.pair_model else "logistic",
        "rules": [
            n
            for n, on in (
                ("numbers", verifier.check_numbers),
                ("entities", verifier.check_entities),
                ("negation", verifier.check_negation),
            )
            if on
        ],
    }
