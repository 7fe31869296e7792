"""The grounding cross-encoder (keel.evals.entailment): pairs, the model, fallback, determinism."""

from __future__ import annotations

import logging

import pytest

from keel.evals import entailment as E
from keel.evals import grounding as G
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


@needs_model
def test_model_scores_are_deterministic_and_reported_per_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped model (built from keel/assets/grounding-ce.npz) is on by default."""
    monkeypatch.delenv(E.ENV_VAR, raising=False)
    resp = "Trains leave every 12 minutes on weekdays. The line opened in 2011."
    a = check_grounding(resp, DOC)
    b = check_grounding(resp, DOC)
    assert a.regime == "document"
    assert a.score == b.score
    assert [c.entailment for c in a.claims] == [c.entailment for c in b.claims]
    # documents: only the least word-supported claim goes to the model (cost cap)
    assert sum(c.entailment is not None for c in a.claims) == G.DOCUMENT_MODEL_CLAIMS
    d = a.details()
    assert d["unsupported_claims"] == ["The line opened in 2011."]
    # passages: every claim is read by the model
    p = check_grounding(resp, CTX)
    assert all(c.entailment is not None for c in p.claims)
    assert "entailment" in p.details()["claims"][0]
    assert p.details()["unsupported_claims"] == ["The line opened in 2011."]
    # switched off: the lexical scorer, exactly
    monkeypatch.setenv(E.ENV_VAR, "off")
    off = check_grounding(resp, CTX)
    assert all(c.entailment is None for c in off.claims)
    assert off.score == check_grounding(resp, CTX, model=False).score


@needs_model
def test_a_refuted_claim_gets_no_support_from_the_model() -> None:
    """The model cannot see a swapped number or a name the context lacks (hard dev cases: AUC
    0.51 alone), so a claim a precise check refuted is capped at NLI_REFUTED_CAP."""
    bad = check_grounding("Tickets cost 3 crowns and trains leave from Oslo Central.", CTX)
    assert bad.features["nli_min"] <= G.NLI_REFUTED_CAP
    assert bad.score < G.DEFAULT_THRESHOLD
    ok = check_grounding("Tickets cost 3 crowns and can be bought from the driver.", CTX)
    assert ok.features["nli_min"] > G.NLI_REFUTED_CAP
    assert ok.score >= G.DEFAULT_THRESHOLD
