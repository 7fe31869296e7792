"""Keel's direct price arithmetic (flat and tiered) equals genai-prices' own calculator."""

from __future__ import annotations

import pytest

genai_prices = pytest.importorskip("genai_prices")

from keel.otlp.cost import price_tokens  # noqa: E402

MODELS = [
    ("claude-sonnet-4-5", "anthropic"),
    ("gemini-2.5-pro", "google"),
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
]
USAGES = [
    (1000, 500, 0, 0),
    (250_000, 1000, 0, 0),
    (300_000, 2000, 100_000, 5000),
    (200_000, 1, 0, 0),
    (200_001, 1, 0, 0),
    (50, 5, 10, 0),
    (0, 0, 0, 0),
]


@pytest.mark.parametrize(("model", "provider"), MODELS)
@pytest.mark.parametrize(("inp", "out", "cached", "written"), USAGES)
def test_matches_genai_prices(
    model: str, provider: str, inp: int, out: int, cached: int, written: int
) -> None:
    mine = price_tokens(model, provider, inp, out, cached, written)
    usage = genai_prices.Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cached or None,
        cache_write_tokens=written or None,
    )
    ref = float(genai_prices.calc_price(usage, model, provider_id=provider).total_price)
    assert mine is not None
    assert mine[0] == pytest.approx(ref, rel=1e-9, abs=1e-15)
