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


# --- short answers, statements inside questions, summary-like answers (issue #5) ---------------

CTX_BOOK = (
    "The Snowman is a picture book without words by the English author Raymond Briggs. "
    "Refunds at Pelham Books are available within 30 days of purchase, unless the item was "
    "bought on clearance."
)


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("Who wrote The Snowman?", "Raymond Briggs"),
        ("How long do I have to ask Pelham Books for a refund?", "30 days"),
    ],
)
def test_bare_name_or_number_answer_is_not_a_negation_or_dropped_condition(
    query: str, answer: str
) -> None:
    # A bare name or number asserts no predicate: it cannot flip the polarity of the context
    # sentence it comes from ('without words') nor drop its condition ('unless ...').
    rep = check_grounding(answer, CTX_BOOK, query=query)
    assert not any(c.negation_mismatch or c.condition_dropped for c in rep.claims)
    assert rep.score >= DEFAULT_THRESHOLD


def test_full_sentence_still_drops_the_condition_and_negated_names_are_checked() -> None:
    rep = check_grounding("Refunds at Pelham Books are available within 30 days.", CTX_BOOK)
    assert rep.claims[0].condition_dropped and rep.score < DEFAULT_THRESHOLD
    ctx = "Seth Rogen starred in Adventureland."
    rep = check_grounding("No, Seth Rogen is not in Adventureland.", ctx)
    assert rep.claims[0].negation_mismatch and rep.score < DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    "answer",
    [
        "Cowboys & Aliens is written by George Lucas. what else can i do for you?",
        "Cowboys & Aliens is written by George Lucas, have you read it?",
        "Did you know that Cowboys & Aliens is written by George Lucas?",
    ],
)
def test_statement_inside_a_question_is_checked(answer: str) -> None:
    ctx = "Cowboys & Aliens is written by Roberto Orci. Cowboys & Aliens has genre Western."
    rep = check_grounding(answer, ctx)
    assert rep.claims and "George Lucas" in rep.claims[0].claim
    assert rep.score < DEFAULT_THRESHOLD
    ok = check_grounding(answer.replace("George Lucas", "Roberto Orci"), ctx)
    assert ok.score >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    "answer",
    [
        "Have you seen Aladdin or Flubber?",
        "Do you know what animal is on the Aladdin poster?",
        "Do you know their team colors?",
        "So, what do you think about Aladdin, is it good?",
        "Did you know that?",
    ],
)
def test_pure_questions_are_still_skipped(answer: str) -> None:
    rep = check_grounding(answer, "Robin Williams starred in Aladdin.")
    assert not rep.claims and rep.skipped and rep.score == 1.0


def test_multi_sentence_answer_over_a_mid_size_chunk_keeps_the_passage_checks() -> None:
    """A 3-claim RAG answer over a ~140-word chunk is a passage: a flipped negation still counts
    (scoring such answers as documents was tried and reverted; see evaluators-grounding.md)."""
    filler = " ".join(
        f"Clause {i} of the policy says the harbour at Ostrava Quay handled more ships."
        for i in range(10)
    )
    text = filler + " Refunds are not available after 30 days. Members get free shipping."
    right = (
        "Refunds are not available after 30 days. Members get free shipping. "
        "The harbour at Ostrava Quay handled more ships."
    )
    flipped = (
        "Refunds are available after 30 days. Members get free shipping. "
        "The harbour at Ostrava Quay handled more ships."
    )
    r, f = check_grounding(right, text), check_grounding(flipped, text)
    assert r.regime == f.regime == "passage"
    assert f.score < DEFAULT_THRESHOLD <= r.score
    assert check_grounding(right, text, regime="document").regime == "document"
