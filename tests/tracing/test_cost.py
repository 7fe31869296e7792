"""Cost from token usage with the bundled genai-prices data (offline)."""

from __future__ import annotations

import pytest

from keel.core.spans import LlmCall
from keel.otlp.cost import price_llm_call, price_tokens

pytest.importorskip("genai_prices")


def test_known_model_priced_with_cache_discount() -> None:
    call = LlmCall(
        provider="openai",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1_000_000,
        cached_tokens=400_000,
        output_tokens=100_000,
    )
    priced = price_llm_call(call)
    # gpt-4o-mini: $0.15 / MTok input, $0.075 cached, $0.60 output
    assert priced.cost_usd == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.1 * 0.6)
    assert priced.cost_source and priced.cost_source.startswith("genai-prices")
    assert "openai/gpt-4o-mini" in priced.cost_source


def test_agrees_with_genai_prices_calculator() -> None:
    from genai_prices import Usage, calc_price

    for model, provider in [("claude-3-5-haiku-20241022", "anthropic"), ("gpt-4o", "openai")]:
        ours = price_tokens(model, provider, 12_345, 678, cached_tokens=1000)
        theirs = calc_price(
            Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=1000),
            model,
            provider_id=provider,
        )
        assert ours is not None and ours[0] == pytest.approx(float(theirs.total_price))


def test_unknown_model_or_local_provider_gets_no_cost() -> None:
    for call in (
        LlmCall(
            provider="openai", response_model="my-finetune-xyz", input_tokens=5, output_tokens=5
        ),
        LlmCall(provider="ollama", response_model="gpt-4o-mini", input_tokens=5, output_tokens=5),
        LlmCall(provider="openai", response_model="gpt-4o-mini"),  # no usage
    ):
        priced = price_llm_call(call)
        assert (priced.cost_usd, priced.cost_source) == (None, None)


def test_span_reported_cost_is_kept() -> None:
    call = LlmCall(
        response_model="gpt-4o-mini",
        input_tokens=10,
        output_tokens=10,
        cost_usd=1.5,
        cost_source="span:llm.cost.total",
    )
    assert price_llm_call(call) is call
    assert price_llm_call(LlmCall(cost_usd=0.1)).cost_source == "span"


def test_falls_back_to_request_model() -> None:
    call = LlmCall(
        provider="openai",
        request_model="gpt-4o-mini",
        response_model="some-deployment-name",
        input_tokens=1000,
        output_tokens=0,
    )
    assert price_llm_call(call).cost_usd == pytest.approx(1000 * 0.15 / 1e6)
