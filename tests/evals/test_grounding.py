"""Groundedness / HallucinationScore: adversarial cases that must fail, paraphrases that must pass."""

from __future__ import annotations

import pytest

from keel.evals.base import Evaluator
from keel.evals.builtins.grounding import Groundedness, HallucinationScore, context_text
from keel.evals.grounding import DEFAULT_THRESHOLD, check_grounding
from keel.evals.registry import get_evaluator

CTX_PLAN = (
    "The Lark plan from Odessa Cloud costs $14 per month and includes 3 user accounts. "
    "Backups are kept for 30 days. The plan does not include a custom domain. "
    "Refunds are available within 10 days of purchase, unless the account was suspended."
)
CTX_HISTORY = (
    "Talia Brenn founded the Ostrel Choir in 1987 in Kalvik. "
    "Her brother Jonas Brenn became its conductor in 1994. "
    "The choir sings only in winter, from November to February."
)

GROUNDED = [
    ("verbatim subset", CTX_PLAN, "The Lark plan costs $14 per month."),
    (
        "paraphrase",
        CTX_PLAN,
        "For $14 a month, Odessa Cloud's Lark plan gives you 3 user accounts.",
    ),
    ("correct negation", CTX_PLAN, "A custom domain is not included in the Lark plan."),
    (
        "condition kept in other words",
        CTX_PLAN,
        "You can get a refund within 10 days of purchase if the account was not suspended.",
    ),
    (
        "names and dates",
        CTX_HISTORY,
        "The Ostrel Choir was founded by Talia Brenn in Kalvik in 1987.",
    ),
    ("second fact", CTX_HISTORY, "Jonas Brenn has conducted the Ostrel Choir since 1994."),
    (
        "restriction kept",
        CTX_HISTORY,
        "The Ostrel Choir only sings in winter, between November and February.",
    ),
]

HALLUCINATED = [
    ("number changed", CTX_PLAN, "The Lark plan costs $19 per month and includes 3 user accounts."),
    (
        "numbers swapped",
        CTX_PLAN,
        "Backups are kept for 10 days, and refunds are available within 30 days of purchase.",
    ),
    ("negation added", CTX_PLAN, "Backups are not kept for 30 days."),
    ("negation removed", CTX_PLAN, "The Lark plan includes a custom domain."),
    (
        "unsupported sentence appended",
        CTX_PLAN,
        "The Lark plan costs $14 per month. It also comes with a free mobile app for iOS.",
    ),
    ("condition dropped", CTX_PLAN, "Refunds are available within 10 days of purchase."),
    (
        "entity swapped",
        CTX_HISTORY,
        "Jonas Brenn founded the Ostrel Choir in 1987, and Talia Brenn became its conductor in 1994.",
    ),
    ("foreign entity", CTX_HISTORY, "Talia Brenn founded the Ostrel Choir in 1987 in Oslo."),
    ("always", CTX_HISTORY, "The Ostrel Choir always sings all year round."),
]


@pytest.mark.parametrize(("case", "context", "answer"), GROUNDED, ids=[c[0] for c in GROUNDED])
def test_grounded_answers_pass(case: str, context: str, answer: str) -> None:
    score = Groundedness().evaluate(response=answer, context=context)
    assert score.error is None
    assert score.passed, (case, score.value, score.reason)
    assert score.details["unsupported_claims"] == [] or score.value >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    ("case", "context", "answer"), HALLUCINATED, ids=[c[0] for c in HALLUCINATED]
)
def test_hallucinated_answers_fail(case: str, context: str, answer: str) -> None:
    score = Groundedness().evaluate(response=answer, context=context)
    assert score.passed is False, (case, score.value, score.details["claims"])
    assert score.details["unsupported_claims"], case
    hall = HallucinationScore().evaluate(response=answer, context=context)
    assert hall.passed is False


def test_grounded_scores_above_hallucinated_on_the_same_context() -> None:
    g = Groundedness()
    good = [g.evaluate(response=a, context=c).score for _, c, a in GROUNDED]
    bad = [g.evaluate(response=a, context=c).score for _, c, a in HALLUCINATED]
    assert min(good) > max(bad)


def test_appended_sentence_is_the_one_reported() -> None:
    score = Groundedness().evaluate(response=HALLUCINATED[4][2], context=CTX_PLAN)
    assert score.details["unsupported_claims"] == ["It also comes with a free mobile app for iOS."]
    assert "not supported" in (score.reason or "")


def test_hallucination_score_is_the_complement_and_lower_is_better() -> None:
    ans, ctx = GROUNDED[1][2], CTX_PLAN
    g = Groundedness().evaluate(response=ans, context=ctx)
    h = HallucinationScore().evaluate(response=ans, context=ctx)
    assert g.value is not None and h.value is not None
    assert h.value == pytest.approx(1 - g.value)
    assert HallucinationScore.higher_is_better is False and Groundedness.higher_is_better is True
    assert h.passed is True and h.threshold == pytest.approx(1 - g.threshold)  # type: ignore[operator]


def test_query_words_count_as_support() -> None:
    ctx = "Ewan MacColl was an English folk singer."
    alone = check_grounding("The singer's nationality was English.", ctx).features["lex_mean"]
    with_q = check_grounding(
        "The singer's nationality was English.", ctx, query="What nationality was the singer?"
    )
    assert with_q.features["lex_mean"] > alone


def test_context_as_documents_and_dicts() -> None:
    docs = [
        {"id": "a", "content": "The Lark plan costs $14 per month."},
        "Backups are kept for 30 days.",
    ]
    assert context_text(docs) == "The Lark plan costs $14 per month.\nBackups are kept for 30 days."
    assert Groundedness().evaluate(response="Backups are kept for 30 days.", context=docs).passed


def test_empty_response_fails_and_missing_input_raises() -> None:
    s = Groundedness().evaluate(response="", context=CTX_PLAN)
    assert s.value == 0.0 and s.passed is False
    from keel.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        Groundedness().evaluate(response="x")


def test_deterministic() -> None:
    a = Groundedness().evaluate(response=HALLUCINATED[1][2], context=CTX_PLAN)
    b = Groundedness().evaluate(response=HALLUCINATED[1][2], context=CTX_PLAN)
    assert a.value == b.value and a.details == b.details


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("Groundedness", Groundedness),
        ("faithfulness", Groundedness),
        ("hallucination_score", HallucinationScore),
    ],
)
def test_registered(name: str, cls: type[Evaluator]) -> None:
    assert get_evaluator(name) is cls


def test_docs_examples_run() -> None:
    import doctest
    import re
    from pathlib import Path

    import keel.evals.builtins.grounding as mod
    import keel.ml.text as text_mod

    doc = Path(__file__).resolve().parents[2] / "docs" / "evaluators-grounding.md"
    for block in re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
        exec(compile(block, str(doc), "exec"), {})
    for m in (mod, text_mod):
        assert doctest.testmod(m).failed == 0


def test_lazy_context_index_details_match_a_fresh_sentence() -> None:
    """Sentence details are computed on first use; they must not depend on which check asks
    first, and the index must not compute them for sentences no check touches."""
    from keel.evals import grounding as G

    ctx = (
        "Lina Voss founded Arborel in 2019, and Marcus Dale joined later. "
        "Refunds are available within 30 days, unless the item was on clearance. "
        "The museum is closed on Mondays."
    ) + " Filler sentence about gardens." * 40
    idx = G.index_context(ctx + " (lazy test)")
    assert not any(s._detailed for s in idx.sentences)
    r1 = G.check_grounding("Marcus founded Arborel in 2019.", ctx + " (lazy test)")
    touched = sum(s._detailed for s in idx.sentences)
    assert 0 < touched < len(idx.sentences) // 2
    assert r1.claims[0].broken_pairs
    s0 = idx.sentences[0]
    fresh = G._Sentence(s0.text, s0._entities)
    assert fresh.anchors == s0.anchors and fresh.quantities == s0.quantities
    assert [c.negated for c in fresh.clauses] == [c.negated for c in s0.clauses]
    assert idx.sentences[2].negated is False and "closed" in idx.sentences[2].tokens
