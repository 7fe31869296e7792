"""The semantic cache: scoping, TTLs, verification (numbers, entities, negation), the index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from keel.gateway.provider import CacheScope
from keel.gateway.semantic_cache import (
    SemanticCache,
    VectorIndex,
    Verifier,
    context_key,
    query_text,
    text_facts,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SCOPE = CacheScope(project_id="prj_a", route="support", model="gpt-4o-mini", prompt_version="7")


def body(text: str, system: str = "You are a support agent.", **kw: Any) -> dict[str, Any]:
    return {
        "model": "support",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        **kw,
    }


def answer(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


class SameVector:
    """An embedder that maps every text to the same vector: similarity is always 1.0, so
    whatever the cache rejects, it rejects on verification alone."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        v = np.zeros((len(texts), 8), dtype=np.float32)
        v[:, 0] = 1.0
        return v


class HashVector:
    """An embedder that gives each distinct text its own random direction (unrelated texts
    are far apart, the same text is identical)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import hashlib

        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(64)
            out[i] = v / np.linalg.norm(v)
        return out


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def minilm() -> Any:
    from keel.ml.embeddings import embeddings_available, get_embedder

    if not embeddings_available():
        pytest.skip("local embeddings not installed")
    return get_embedder("qint8")  # what the cache runs


async def test_paraphrase_hits_with_real_minilm(minilm: Any) -> None:
    cache = SemanticCache(minilm)
    assert await cache.store(SCOPE, body("How do I reset my password?"), answer("Use 'Forgot'."))
    hit = await cache.lookup(SCOPE, body("How can I reset my password?"))
    assert hit is not None
    assert hit.similarity is not None and 0.9 < hit.similarity <= 1.0
    assert hit.response["choices"][0]["message"]["content"] == "Use 'Forgot'."
    assert await cache.lookup(SCOPE, body("How do I delete my account?")) is None


@pytest.mark.parametrize(
    "other",
    [
        CacheScope("prj_b", "support", "gpt-4o-mini", "7"),
        CacheScope("prj_a", "billing", "gpt-4o-mini", "7"),
        CacheScope("prj_a", "support", "gpt-4o", "7"),
        CacheScope("prj_a", "support", "gpt-4o-mini", "8"),
    ],
)
async def test_never_shared_across_scopes(other: CacheScope) -> None:
    cache = SemanticCache(SameVector())
    await cache.store(SCOPE, body("What is the refund window?"), answer("30 days"))
    assert await cache.lookup(SCOPE, body("What is the refund window?")) is not None
    assert await cache.lookup(other, body("What is the refund window?")) is None


async def test_context_must_match_exactly() -> None:
    cache = SemanticCache(SameVector())
    await cache.store(SCOPE, body("What is the refund window?"), answer("30 days"))
    assert await cache.lookup(SCOPE, body("What is the refund window?", system="Be rude.")) is None
    assert await cache.lookup(SCOPE, body("What is the refund window?", temperature=1.0)) is None
    longer = body("What is the refund window?")
    longer["messages"].insert(1, {"role": "user", "content": "Hi"})
    assert await cache.lookup(SCOPE, longer) is None
    # Transport fields do not split the partition.
    assert await cache.lookup(SCOPE, body("What is the refund window?", stream=True)) is not None
    assert context_key(SCOPE, body("a")) == context_key(SCOPE, body("b"))


async def test_ttl_expiry() -> None:
    clock = Clock()
    cache = SemanticCache(HashVector(), ttl_s=60, clock=clock)
    await cache.store(SCOPE, body("What is the refund window?"), answer("30 days"))
    await cache.store(SCOPE, body("Where is my parcel?"), answer("On its way"), ttl_s=5)
    clock.t += 6
    assert await cache.lookup(SCOPE, body("Where is my parcel?")) is None
    assert await cache.lookup(SCOPE, body("What is the refund window?")) is not None
    clock.t += 60
    assert await cache.lookup(SCOPE, body("What is the refund window?")) is None
    assert cache.purge_expired() == 0  # expired entries were dropped when they were met
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("cached", "query", "reason"),
    [
        ("Book a table for 4 people at 7pm", "Book a table for 5 people at 7pm", "numbers"),
        ("What did the company earn in 2019?", "What did the company earn in 2021?", "numbers"),
        ("Transfer $1,200 to savings", "Transfer $12,000 to savings", "numbers"),
        ("What is the capital city of France?", "What is the capital city of Spain?", "entities"),
        ("How do I install it on Windows?", "How do I install it on Ubuntu?", "entities"),
        (
            "Is smoking allowed in the hotel rooms?",
            "Is smoking not allowed in the hotel rooms?",
            "negation",
        ),
        ("Can I cancel my order?", "Can't I cancel my order?", "negation"),
        ("The refund was approved", "The refund was never approved", "negation"),
    ],
)
async def test_verification_rejects_mismatches_even_at_similarity_one(
    cached: str, query: str, reason: str
) -> None:
    cache = SemanticCache(SameVector())
    await cache.store(SCOPE, body(cached), answer("cached answer"))
    assert await cache.lookup(SCOPE, body(query)) is None
    assert cache.stats.get("reject_" + reason) == 1
    v = Verifier().verify(text_facts(cached), text_facts(query), 0.99)
    assert not v.ok and v.reason == reason


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("How do I learn Python?", "how do i learn python"),  # casing noise is not an entity change
        ("What is 1,200 divided by 4?", "What is 1200 divided by four?"),
        ("Is it possible to cancel an order?", "Can an order be cancelled?"),
    ],
)
def test_rules_accept_true_paraphrases(cached: str, query: str) -> None:
    assert Verifier().rules(text_facts(cached), text_facts(query)) is None


def test_verifier_floor_and_identical_text() -> None:
    f = text_facts("Where is my parcel?")
    assert not Verifier(min_similarity=0.8).verify(f, f, 0.79).ok
    assert Verifier().verify(f, f, 0.8).ok
    # The learned decision: a high bar rejects a borderline paraphrase, a low one accepts it.
    a, b = (
        text_facts("How can I get rid of pimples?"),
        text_facts("How do you get rid of a pimple?"),
    )
    strict, lax = Verifier(decision=0.9999), Verifier(decision=0.01)
    assert not strict.verify(a, b, 0.85).ok
    assert lax.verify(a, b, 0.85).ok


async def test_non_text_and_incomplete_requests_are_skipped() -> None:
    cache = SemanticCache(SameVector())
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    }
    assert query_text(image) is None
    assert not await cache.store(SCOPE, image, answer("a cat"))
    assert query_text({"messages": [{"role": "assistant", "content": "hi"}]}) is None
    partial = answer("cut")
    partial["choices"][0]["finish_reason"] = None
    assert not await cache.store(SCOPE, body("Where is my parcel?"), partial)
    assert len(cache) == 0


async def test_partition_is_bounded_oldest_out() -> None:
    cache = SemanticCache(HashVector(), max_entries=2)
    for q in ("first question", "second question", "third question"):
        await cache.store(SCOPE, body(q), answer(q))
    assert len(cache) == 2
    assert await cache.lookup(SCOPE, body("first question")) is None
    assert await cache.lookup(SCOPE, body("third question")) is not None


def test_ivf_index_finds_near_duplicates_like_brute_force() -> None:
    rng = np.random.default_rng(3)
    dim, n = 32, 3000
    centers = rng.standard_normal((40, dim))
    data = centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    idx = VectorIndex(dim, ivf_min_rows=1000, nprobe=8)
    for v in data:
        idx.add(v)
    assert idx._centroids is not None  # switched to IVF
    found = 0
    for i in rng.integers(0, n, 200):
        q = data[i] + 0.05 * rng.standard_normal(dim).astype(np.float32)
        q /= np.linalg.norm(q)
        exact = int(np.argmax(data @ q))
        got = idx.search(q, 1)
        found += bool(got) and got[0][0] == exact
    assert found >= 196  # >= 98 % of exact nearest neighbours
    # Removed rows never come back; min_score filters.
    idx.remove(int(np.argmax(data @ data[0])))
    assert all(r != 0 for r, _ in idx.search(data[0], 5))
    assert idx.search(data[1], 5, min_score=1.01) == []
    assert len(idx) == n - 1


def test_static_query_encoder_gets_its_own_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.gateway import semantic_cache as sc
    from keel.ml.static_embeddings import StaticEmbedder

    monkeypatch.delenv("KEEL_CACHE_PAIR_MODEL", raising=False)
    v = SemanticCache(StaticEmbedder()).verifier
    assert (v.min_similarity, v.decision, v.bias) == (
        sc.STATIC_FLOOR,
        sc.STATIC_DECISION,
        sc.STATIC_BIAS,
    )
    assert v.weights == sc.STATIC_WEIGHTS
    m = SemanticCache(SameVector()).verifier  # any other embedder: the MiniLM fit
    assert (m.min_similarity, m.decision, m.weights) == (
        0.80,
        sc.DEFAULT_DECISION,
        sc.DEFAULT_WEIGHTS,
    )
