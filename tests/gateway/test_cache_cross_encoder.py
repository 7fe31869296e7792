"""The semantic cache's cross-encoder verifier: real model, real MiniLM, and its fallback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.gateway.provider import CacheScope
from keel.gateway.semantic_cache import (
    DEFAULT_PAIR_DECISION,
    SemanticCache,
    Verifier,
    default_verifier,
    text_facts,
)
from keel.ml import cross_encoder

pytestmark = pytest.mark.anyio

SCOPE = CacheScope(project_id="prj_a", route="support", model="gpt-4o-mini", prompt_version="7")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def body(text: str) -> dict[str, Any]:
    return {"model": "support", "messages": [{"role": "user", "content": text}]}


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


@pytest.fixture(scope="module")
def minilm() -> Any:
    from keel.ml.embeddings import get_embedder

    return get_embedder()  # the 'local' extra is a dev dependency: fail, do not skip


TRAINED = Path(__file__).resolve().parents[2] / "build" / "pair-verifier-int8.onnx"


def _model_file() -> Path | None:
    """A trained model (not shipped: tools/train_pair_verifier.py writes build/…, or
    KEEL_CACHE_PAIR_MODEL names one)."""
    import os

    p = Path(os.environ.get(cross_encoder.ENV_VAR) or TRAINED)
    return p if p.is_file() else None


@pytest.fixture
def ce(monkeypatch: pytest.MonkeyPatch) -> Iterator[cross_encoder.CrossEncoder]:
    path = _model_file()
    if path is None:
        pytest.skip("no trained pair model (tools/train_pair_verifier.py)")
    monkeypatch.setenv(cross_encoder.ENV_VAR, str(path))
    monkeypatch.setattr(cross_encoder, "_instance", None)
    monkeypatch.setattr(cross_encoder, "_failed", False)
    yield cross_encoder.CrossEncoder()


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A configured model file that is not there (a fresh process-wide loader)."""
    monkeypatch.setenv(cross_encoder.ENV_VAR, str(tmp_path / "absent.onnx"))
    monkeypatch.setattr(cross_encoder, "_instance", None)
    monkeypatch.setattr(cross_encoder, "_failed", False)
    yield


def test_default_verifier_is_logistic_without_a_configured_model(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(cross_encoder.ENV_VAR, raising=False)
    monkeypatch.setattr(cross_encoder, "_instance", None)
    monkeypatch.setattr(cross_encoder, "_failed", False)
    with caplog.at_level(logging.WARNING):
        v = default_verifier()
    assert v.pair_model is None
    assert not caplog.records  # nothing configured: no warning


def test_default_verifier_uses_a_configured_cross_encoder(ce: cross_encoder.CrossEncoder) -> None:
    v = default_verifier()
    assert isinstance(v.pair_model, cross_encoder.CrossEncoder)
    assert v.pair_decision == DEFAULT_PAIR_DECISION


async def test_paraphrase_hit_through_the_cross_encoder(
    minilm: Any, ce: cross_encoder.CrossEncoder
) -> None:
    cache = SemanticCache(minilm)
    assert cache.verifier.pair_model is not None
    await cache.store(SCOPE, body("How do I reset my password?"), answer("Use 'Forgot'."))
    hit = await cache.lookup(SCOPE, body("How can I reset my password?"))
    assert hit is not None
    assert hit.response["choices"][0]["message"]["content"] == "Use 'Forgot'."
    assert cache.stats["hits"] == 1


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("How do I learn Java?", "How do I learn Python?"),  # entity
        ("What is the capital of France?", "What is the capital of Germany?"),  # entity
        ("How do I lose 10 kg in a month?", "How do I lose 30 kg in a month?"),  # number
        ("Is coffee good for your health?", "Is coffee not good for your health?"),  # negation
    ],
)
async def test_changed_fact_misses_on_the_cross_encoder_alone(
    minilm: Any, ce: cross_encoder.CrossEncoder, cached: str, query: str
) -> None:
    # Rules off and no similarity floor: only the cross-encoder stands between the query
    # and the wrong answer.
    v = Verifier(
        min_similarity=0.0,
        check_numbers=False,
        check_entities=False,
        check_negation=False,
        pair_model=ce,
        pair_decision=DEFAULT_PAIR_DECISION,
    )
    cache = SemanticCache(minilm, verifier=v)
    await cache.store(SCOPE, body(cached), answer("cached answer"))
    assert await cache.lookup(SCOPE, body(query)) is None
    assert cache.stats.get("reject_model") == 1


def test_cross_encoder_scores_paraphrases_above_changed_facts(
    ce: cross_encoder.CrossEncoder,
) -> None:
    same, diff = ce.score(
        [
            ("How can I improve my English speaking?", "How do I improve my spoken English?"),
            ("How can I improve my English speaking?", "How can I improve my French speaking?"),
        ]
    )
    assert same > DEFAULT_PAIR_DECISION > diff


def test_verify_many_batches_only_candidates_that_pass_the_rules() -> None:
    calls: list[list[tuple[str, str]]] = []

    class Recorder:
        def score(self, pairs: Any) -> Any:
            import numpy as np

            calls.append(list(pairs))
            return np.array([0.99] * len(pairs))

    v = Verifier(min_similarity=0.5, pair_model=Recorder(), pair_decision=0.9)
    q = text_facts("How do I learn Java fast?")
    out = v.verify_many(
        [
            (text_facts("How can I learn Java quickly?"), 0.9),
            (text_facts("How do I learn Python fast?"), 0.9),  # entity rule
            (text_facts("How do I learn Java fast?"), 1.0),  # identical
            (text_facts("What is Java used for?"), 0.4),  # below the floor
        ],
        q,
    )
    assert [(x.ok, x.reason) for x in out] == [
        (True, "ok"),
        (False, "entities"),
        (True, "identical"),
        (False, "similarity"),
    ]
    assert calls == [[("How can I learn Java quickly?", "How do I learn Java fast?")]]


def test_first_ok_stops_at_the_first_accepted_candidate() -> None:
    import numpy as np

    calls: list[list[tuple[str, str]]] = []

    class ByText:
        def score(self, pairs: Any) -> Any:
            calls.append(list(pairs))
            return np.array([0.95 if "quickly" in a else 0.1 for a, _ in pairs])

    v = Verifier(min_similarity=0.5, pair_model=ByText(), pair_decision=0.9)
    q = text_facts("How do I learn Java fast?")
    cands = [
        (text_facts("Where can I learn Java fast?"), 0.95),
        (text_facts("How can I learn Java quickly?"), 0.9),
        (text_facts("How should I learn Java fast?"), 0.85),
    ]
    out = v.verify_many(cands, q, first_ok=True)
    assert [(x.ok, x.reason) for x in out] == [(False, "model"), (True, "ok")]
    assert [len(c) for c in calls] == [1, 1]  # one run per candidate, none after the hit
    calls.clear()
    assert len(v.verify_many(cands, q)) == 3 and [len(c) for c in calls] == [3]


async def test_missing_model_falls_back_with_a_warning(
    no_model: None, minilm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        cache = SemanticCache(minilm)
        assert cache.verifier.pair_model is None  # the logistic verifier
    assert "cross-encoder" in caplog.text
    assert any(r.name == "keel.gateway" for r in caplog.records)
    # ... and the cache still works on it.
    await cache.store(SCOPE, body("How do I reset my password?"), answer("Use 'Forgot'."))
    assert await cache.lookup(SCOPE, body("How do I reset my password?")) is not None
    assert await cache.lookup(SCOPE, body("What is the capital of Germany?")) is None


def test_unreadable_model_is_unavailable(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    from keel.errors import UnavailableError

    with pytest.raises(UnavailableError):
        cross_encoder.CrossEncoder(bad)
