"""keel.ml.text helpers (numbers, entities, negation, claims) and keel.ml.embeddings."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.ml import text as T


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Rowe joined in 2011. She left in 2015!",
            ["Dr. Rowe joined in 2011.", "She left in 2015!"],
        ),
        ("It costs 3.5 dollars. Done.", ["It costs 3.5 dollars.", "Done."]),
        (
            "published in the 19th century.First for Women is a magazine.",
            ["published in the 19th century.", "First for Women is a magazine."],
        ),
        ("He lives in the U.S. now.", ["He lives in the U.S. now."]),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert T.split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("It costs $1,200 for 3 days.", [(1200.0, "usd"), (3.0, "day")]),
        ("about 15% or 15 percent", [(15.0, "percent"), (15.0, "percent")]),
        ("2 km away", [(2000.0, "m")]),
        ("1.5 million people", [(1_500_000.0, None)]),
        ("twenty-five runners and three dogs", [(25.0, None), (3.0, None)]),
        ("one of the best", []),
    ],
)
def test_quantities(text: str, values: list[tuple[float, str | None]]) -> None:
    assert sorted((q.value, q.unit) for q in T.extract_quantities(text)) == sorted(values)


def test_quantity_matching_across_units_and_words() -> None:
    (a,) = T.extract_quantities("6 weeks")
    (b,) = T.extract_quantities("six-week course")
    (c,) = T.extract_quantities("7 weeks")
    assert a.matches(b) and not a.matches(c)
    (km,) = T.extract_quantities("3 km")
    (m,) = T.extract_quantities("3000 m")
    assert km.matches(m)


def test_dates() -> None:
    assert T.extract_dates("born March 2, 1991, died 22 October 1989, in May 2004") == [
        "1991-03-02",
        "1989-10-22",
        "2004-05",
    ]


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ("Lina Voss founded Arborel Labs in Oslo.", ["Lina Voss", "Arborel Labs", "Oslo"]),
        (
            "The University of Oslo hired Anna van der Berg.",
            ["University of Oslo", "Anna van der Berg"],
        ),
        ("Pets are not permitted. The Nervi 2 drone flies.", ["Nervi 2"]),
        ("I didn't know RDJ was in it.", ["RDJ"]),
        ("However, the plan works.", []),
    ],
)
def test_entities(text: str, entities: list[str]) -> None:
    assert T.extract_entities(text) == entities


def test_sentence_initial_word_is_a_name_when_known() -> None:
    assert T.extract_entities("Vireo keeps data.") == []
    assert T.extract_entities("Vireo keeps data.", known={"vireo"}) == ["Vireo"]


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("The device does not support Bluetooth.", True),
        ("It doesn't work.", True),
        ("It never fails.", False),  # two cues cancel
        ("It works.", False),
        ("No appointment is needed.", True),
    ],
)
def test_negation(text: str, negated: bool) -> None:
    assert T.is_negated(text) is negated


def test_cues_and_antonyms() -> None:
    assert T.quantifier_cues("It always works, except on Sundays.") == {"always", "except"}
    assert "unless" in T.condition_cues("Refunds unless suspended")
    assert "as long as" in T.condition_cues("as long as it is new")
    assert T.antonym_conflicts(
        "The shop is open on Mondays.", "The shop is closed on Mondays."
    ) == [("open", "closed")]
    assert T.antonym_conflicts("open and closed", "closed and open") == []


def test_claims_split_on_semicolons_and_but() -> None:
    claims = T.extract_claims(
        "The fee is $20 for members; others pay $35, but refunds are not allowed. It opened in 2011."
    )
    assert claims == [
        "The fee is $20 for members",
        "others pay $35",
        "refunds are not allowed.",
        "It opened in 2011.",
    ]


@given(st.text(max_size=300))
def test_helpers_never_crash(s: str) -> None:
    T.split_sentences(s)
    T.extract_claims(s)
    T.extract_quantities(s)
    T.extract_entities(s)
    T.extract_dates(s)
    T.content_tokens(s)
    T.is_negated(s)


# ---------------------------------------------------------------------------------------------
# embeddings

emb_mod = pytest.importorskip("keel.ml.embeddings")
if not emb_mod.embeddings_available():  # pragma: no cover
    pytest.skip("local extra not installed", allow_module_level=True)


def test_embeddings_normalized_cached_and_meaningful() -> None:
    e = emb_mod.get_embedder()
    assert e is emb_mod.get_embedder()
    v = e.embed(
        [
            "How do I reset my password?",
            "Steps to change a forgotten password",
            "The cat sat on the mat.",
        ]
    )
    assert v.shape == (3, 384)
    assert abs(float((v[0] ** 2).sum()) - 1.0) < 1e-4
    assert float(v[0] @ v[1]) > 0.6 > 0.3 > float(v[0] @ v[2])
    again = e.embed(["How do I reset my password?"])
    assert float(again[0] @ v[0]) == pytest.approx(1.0, abs=1e-5)


def test_embedding_batch_equals_single_and_threads_share_one_model() -> None:
    e = emb_mod.get_embedder()
    texts = ["alpha beta gamma", "a much longer sentence about rowing clubs and their fees", "x"]
    batch = e.embed(texts)
    for i, t in enumerate(texts):
        one = emb_mod.Embedder._run(e, [t])[0]
        assert float(one @ batch[i]) == pytest.approx(1.0, abs=1e-4)
    seen: list[object] = []
    threads = [
        threading.Thread(target=lambda: seen.append(emb_mod.get_embedder())) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s is e for s in seen)


def test_split_sentences_survives_punctuation_only_fragments() -> None:
    from keel.ml.text import extract_entities, split_sentences

    text = '. If the statement ‘‘”LINUX is only… ok. "). Next one.'
    assert split_sentences(text)
    extract_entities(text)


@pytest.mark.parametrize(
    "text",
    [
        "Lina Voss founded Arborel in 2019. Marcus Dale joined later. Arborel moved to Oslo.",
        "The NASA probe left. Pets are not allowed. Pets rule, said Anne of Cleves.",
        "Nervi 2 shipped on Monday. Python 3.8 is old.",
        "",
    ],
)
def test_entities_by_sentence_matches_extract_entities(text: str) -> None:
    sents = T.split_sentences(text) or [text]
    per = T.entities_by_sentence(sents)
    assert len(per) == len(sents)
    assert [e for es in per for e in es] == T.extract_entities(text)


@given(st.text(alphabet="abc XYZ0123456789$%.,-", max_size=60))
def test_digit_fast_path_keeps_quantities(text: str) -> None:
    # words=False has no number words, so every quantity comes from a digit
    qs = T.extract_quantities(text, words=False)
    assert all(any(ch.isdigit() for ch in q.text) for q in qs)
    if not any(ch.isdigit() for ch in text):
        assert qs == []
