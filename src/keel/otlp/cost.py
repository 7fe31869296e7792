"""Cost of an LLM call from its token usage, priced offline with ``genai-prices``.

Runs at ingest for every LLM span, so the slow part (finding the model in the price data) is
cached per (provider, model, day) and the arithmetic is plain floats for the usual flat
per-token prices; tiered prices fall back to ``genai-prices``' own calculator.

Rules:

* a cost the instrumentation already reported on the span is kept, with its source
  (``span:<attribute>``);
* otherwise the price comes from the bundled ``genai-prices`` snapshot (never its network
  auto-update), source ``genai-prices <version>: <provider>/<model>``;
* an unknown model, or a provider Keel knows but the price data does not, gets no cost at all
  rather than a guessed one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from keel.core.spans import LlmCall

__all__ = ["price_llm_call", "price_tokens"]

_log = logging.getLogger(__name__)

# OTel GenAI provider names → genai-prices provider ids. A provider named on the span but absent
# here is priced only if genai-prices knows it under the same id.
_PROVIDER_IDS = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "moonshot_ai": "moonshotai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "fireworks": "fireworks",
    "together": "together",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
}
# Providers that run models locally or that genai-prices cannot price: never guessed.
_UNPRICED = frozenset({"ollama", "vllm", "llama.cpp", "local", "fake", "keel.local", "lmstudio"})
_FLAT_KEYS = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "output_mtok")


# A per-token rate: a float, or (base, ((start, rate), ...)) for tiered "cliff" pricing where
# crossing a tier's start (total input tokens) applies its rate to all tokens.
_Rate = float | tuple[float, tuple[tuple[int, float], ...]]


@dataclass(frozen=True)
class _Price:
    """Per-token prices in USD (None: use genai-prices' calculator)."""

    source: str
    model_price: Any
    input: _Rate | None
    cache_read: _Rate | None
    cache_write: _Rate | None
    output: _Rate | None
    flat: bool


def _at(rate: _Rate | None, total_input: int) -> float | None:
    """The rate that applies at ``total_input`` tokens (genai-prices' cliff rule)."""
    if rate is None or isinstance(rate, float):
        return rate
    base, tiers = rate
    for start, r in reversed(tiers):
        if total_input > start:
            return r
    return base


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("genai-prices")
    except Exception:
        return "?"


@lru_cache(maxsize=4096)
def _lookup(provider_id: str | None, model: str, day: str) -> _Price | None:
    """Find the model's prices once per day (prices carry start/end dates)."""
    try:
        import genai_prices
        from genai_prices import Usage
    except ImportError:  # the SDK install has no price data
        return None
    try:
        calc = genai_prices.calc_price(
            Usage(input_tokens=0, output_tokens=0),
            model,
            provider_id=provider_id,
            genai_request_timestamp=datetime.fromisoformat(day).replace(tzinfo=UTC),
        )
    except LookupError:
        return None
    except Exception:
        _log.debug("genai-prices lookup failed for %s/%s", provider_id, model, exc_info=True)
        return None
    mp = calc.model_price
    values = {k: v for k, v in vars(mp).items() if v is not None and not k.startswith("_")}
    # Flat when the token prices are plain per-token figures (not tiered by context length).
    # Per-request or per-search prices do not apply to the units Keel counts.
    # Flat or tiered per-token prices are computed here; anything else uses genai-prices.
    flat = all(
        isinstance(values[k], Decimal) or hasattr(values[k], "tiers")
        for k in _FLAT_KEYS
        if k in values
    )

    def rate(key: str) -> _Rate | None:
        v = values.get(key)
        if isinstance(v, Decimal):
            return float(v) / 1_000_000
        if v is not None and hasattr(v, "tiers"):
            tiers = tuple(sorted((int(t.start), float(t.price) / 1_000_000) for t in v.tiers))
            return (float(v.base) / 1_000_000, tiers)
        return None

    return _Price(
        source=f"genai-prices {_version()}: {calc.provider.id}/{calc.model.id}",
        model_price=mp,
        input=rate("input_mtok"),
        cache_read=rate("cache_read_mtok"),
        cache_write=rate("cache_write_mtok"),
        output=rate("output_mtok"),
        flat=flat,
    )


_day: tuple[float, str] = (0.0, "")  # (UTC midnight ending the day, that day's ISO date)


def _today() -> str:
    """Today's UTC date, ISO format; recomputed once per day (ingest prices every LLM span)."""
    global _day
    now = time.time()
    if now >= _day[0] or now < _day[0] - 86400:
        _day = ((now // 86400 + 1) * 86400, datetime.fromtimestamp(now, UTC).date().isoformat())
    return _day[1]


def _provider_id(provider: str | None) -> tuple[bool, str | None]:
    """(priceable, genai-prices id). Unknown providers are matched by model name only."""
    if provider is None:
        return True, None
    p = provider.lower()
    if p in _UNPRICED:
        return False, None
    return True, _PROVIDER_IDS.get(p, p)


_KNOWN_IDS = frozenset(_PROVIDER_IDS.values())


@lru_cache(maxsize=4096)
def _resolve(provider: str | None, model: str, day: str) -> _Price | None:
    """The price of ``model`` as named on a span (provider spelling as given), cached."""
    ok, pid = _provider_id(provider)
    if not ok:
        return None
    price = _lookup(pid, model.lower(), day)
    if price is None and pid is not None and pid not in _KNOWN_IDS:
        price = _lookup(None, model.lower(), day)
    return price


def price_tokens(
    model: str,
    provider: str | None,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    at: datetime | None = None,
) -> tuple[float, str] | None:
    """USD cost and price source for a usage, or None when the model cannot be priced.

    ``input_tokens`` includes cached tokens (OTel GenAI convention).
    """
    if not model:
        return None
    day = _today() if at is None else at.date().isoformat()
    price = _resolve(provider, model, day)
    if price is None:
        return None
    if price.flat and price.input is not None and price.output is not None:
        cr = cached_tokens or 0
        cw = cache_write_tokens or 0
        plain = max(0, input_tokens - cr - cw)
        r_in = _at(price.input, input_tokens) or 0.0
        r_cr, r_cw = _at(price.cache_read, input_tokens), _at(price.cache_write, input_tokens)
        cost = plain * r_in + output_tokens * (_at(price.output, input_tokens) or 0.0)
        cost += cr * (r_cr if r_cr is not None else r_in)
        cost += cw * (r_cw if r_cw is not None else r_in)
        return cost, price.source
    try:
        from genai_prices import Usage

        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cached_tokens or None,
            cache_write_tokens=cache_write_tokens or None,
        )
        total = price.model_price.calc_price(usage)["total_price"]
        return float(total), price.source
    except Exception:
        _log.debug("genai-prices could not price %s", model, exc_info=True)
        return None


def price_llm_call(llm: LlmCall, at: datetime | None = None, *, in_place: bool = False) -> LlmCall:
    """``llm`` with ``cost_usd``/``cost_source`` filled from its usage (unchanged if priced).

    A cost the span reported is kept. Without token counts or a known model, the call stays
    unpriced. ``in_place`` sets the two fields on ``llm`` itself instead of copying it (the
    ingest path, which owns the object it just built).
    """

    def _with(update: dict[str, Any]) -> LlmCall:
        if in_place:
            llm.__dict__.update(update)
            llm.__pydantic_fields_set__.update(update)
            return llm
        return llm.model_copy(update=update)

    if llm.cost_usd is not None:
        if llm.cost_source is None:
            return _with({"cost_source": "span"})
        return llm
    if llm.input_tokens is None and llm.output_tokens is None:
        return llm
    for model in (llm.response_model, llm.request_model):
        if not model:
            continue
        priced = price_tokens(
            model,
            llm.provider,
            llm.input_tokens or 0,
            llm.output_tokens or 0,
            llm.cached_tokens or 0,
            llm.cache_write_tokens or 0,
            at,
        )
        if priced is not None:
            return _with({"cost_usd": priced[0], "cost_source": priced[1]})
    return llm
