"""The grounding cross-encoder (keel.evals.entailment): pairs, the model, fallback, determinism."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from keel.evals import entailment as E
from keel.evals.builtins.grounding import Groundedness
from keel.evals.grounding import check_grounding, index_context

CTX = (
    "Harlow Transit runs the Blue Line between Ostrava Quay and Penmore Hill. "
    "Trains leave every 12 minutes on weekdays, but only every 30 minutes on Sundays. "
    "Bicycles are allowed on board except during the morning rush between 7 and 9 a.m. "
    "The line opened in 2009 under director Ilse Marren. "
    "Tickets cost 3 crowns and can be bought from the driver."
)

# Over DOCUMENT_WORDS words: the document regime, where the cross-encoder is used.
DOC = (
    CTX
    + " "
    + " ".join(
        f"Station {i} of the line has a kiosk, a bench and a timetable board." for i in range(25)
    )
)
try:
    import onnxruntime  # noqa: F401

    _ORT = True
except ImportError:  # pragma: no cover
    _ORT = False
# Only the optional extra may be missing; a missing committed model file is a failure.
needs_model = pytest.mark.skipif(not _ORT, reason="the 'local' extra is not installed")


# (claim, the context sentence the evidence must contain)
EVIDENCE = [
    ("The Blue Line opened in 2009.", "The line opened in 2009 under director Ilse Marren."),
    ("A ticket is 3 crowns.", "Tickets cost 3 crowns and can be bought from the driver."),
    ("On Sundays trains come every 30 minutes.", "only every 30 minutes on Sundays"),
]


@pytest.mark.parametrize(("claim", "sentence"), EVIDENCE)
def test_evidence_is_the_sentence_sharing_rare_words(claim: str, sentence: str) -> None:
    [(a, b)] = E.claim_pairs(claim, CTX)
    assert a == claim
    assert sentence in b
    sents = [s for s in index_context(CTX).sentences if s.text in b]
    assert 1 <= len(sents) <= E.EVIDENCE_K


def test_short_claim_is_read_with_the_end_of_the_query() -> None:
    hist = "[Human]: I like trains. [Assistant]: Me too! [Human]: Who directed the Blue Line?"
    [(a, b)] = E.claim_pairs("Ilse Marren.", CTX, query=hist)
    assert a == "Who directed the Blue Line? Ilse Marren."
    assert "Ilse Marren" in b
    # a long claim stands alone
    long = "The Blue Line was opened in 2009 under its director Ilse Marren."
    assert E.claim_pairs(long, CTX, query=hist)[0][0] == long


def test_one_pair_per_factual_claim_and_chit_chat_alone_still_gets_one() -> None:
    pairs = E.claim_pairs("Tickets cost 3 crowns. The line opened in 2009.", CTX)
    assert [a for a, _ in pairs] == ["Tickets cost 3 crowns.", "The line opened in 2009."]
    assert len(E.claim_pairs("I love trains!", CTX)) == 1
    assert E.claim_pairs("", CTX) == []


def test_pairs_use_the_cached_index() -> None:
    idx = index_context(CTX)
    assert E.claim_pairs("Tickets cost 3 crowns.", idx) == E.claim_pairs(
        "Tickets cost 3 crowns.", CTX
    )


def test_missing_model_file_falls_back_to_the_lexical_scorer_with_a_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    missing = f"{tmp_path}/no-such-model.onnx"
    resp = "Trains leave every 12 minutes on weekdays."
    with caplog.at_level(logging.WARNING, logger="keel.evals.entailment"):
        rep = check_grounding(resp, DOC, model_path=missing)
    assert rep.regime == "document"
    assert "falls back to the lexical scorer" in caplog.text
    lexical = check_grounding(resp, DOC, model=False)
    assert rep.score == lexical.score
    assert all(c.entailment is None for c in rep.claims)
    # through the evaluator too
    s = Groundedness(model_path=missing).evaluate(response=resp, context=DOC)
    assert s.value == lexical.score
    with pytest.raises(FileNotFoundError):
        check_grounding(resp, CTX, model=True, model_path=missing)


_TRAINED = Path(__file__).resolve().parents[2] / "build" / "grounding-nli-minilm-l2-int8.onnx"


@needs_model
def test_model_scores_are_deterministic_and_reported_per_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a trained model configured (not shipped: tools/train_grounding_nli.py writes it to
    build/, or KEEL_GROUNDING_MODEL names one)."""
    path = os.environ.get(E.ENV_VAR) or str(_TRAINED)
    if not Path(path).is_file():
        pytest.skip("no trained grounding model (tools/train_grounding_nli.py)")
    monkeypatch.setenv(E.ENV_VAR, path)
    resp = "Trains leave every 12 minutes on weekdays. The line opened in 2011."
    a = check_grounding(resp, DOC)
    b = check_grounding(resp, DOC)
    assert a.regime == "document"
    # passages keep the lexical model (the fit gives the model's features no weight there)
    assert all(c.entailment is None for c in check_grounding(resp, CTX).claims)
    assert a.score == b.score
    assert [c.entailment for c in a.claims] == [c.entailment for c in b.claims]
    ok, bad = a.claims
    assert ok.entailment is not None and bad.entailment is not None
    assert ok.entailment > bad.entailment
    d = a.details()
    assert "entailment" in d["claims"][0]
    assert d["unsupported_claims"] == ["The line opened in 2011."]
