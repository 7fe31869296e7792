"""Model prices and context windows from ``genai-prices`` (offline data, looked up once per model)."""

from __future__ import annotations

import functools
from typing import Any

GENAI_PROVIDER_IDS = {"openai": "openai", "azure_openai": "azure", "anthropic": "anthropic"}
MTOK = 1_000_000


@functools.lru_cache(maxsize=4096)
def model_price(provider_type: str, model: str) -> tuple[float, float, int | None] | None:
    """(USD per input token, USD per output token, context window) or None when unknown."""
    pid = GENAI_PROVIDER_IDS.get(provider_type)
    if pid is None:
        return None
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    try:
        pin = calc_price(
            Usage(input_tokens=MTOK, output_tokens=0), model_ref=model, provider_id=pid
        )
        pout = calc_price(
            Usage(input_tokens=0, output_tokens=MTOK), model_ref=model, provider_id=pid
        )
    except Exception:  # unknown model / provider: no price
        return None
    cw: Any = getattr(pin.model, "context_window", None)
    return float(pin.total_price) / MTOK, float(pout.total_price) / MTOK, int(cw) if cw else None


def cost_usd(price: tuple[float, float] | None, usage: dict[str, Any] | None) -> float | None:
    """Cost of one answer's usage (cache reads priced like input: an upper bound)."""
    if price is None or not usage:
        return None
    return price[0] * int(usage.get("prompt_tokens") or 0) + price[1] * int(
        usage.get("completion_tokens") or 0
    )
