"""Routes (prompt × model policy × guardrail policy) and the decision recorded per request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Target(BaseModel):
    """One upstream model a route can send to."""

    name: str
    provider: str
    model: str
    weight: float = 1.0


class Route(BaseModel):
    """A named route."""

    name: str
    prompt: str | None = None
    targets: list[Target] = Field(default_factory=list)
    strategy: str = "weighted"
    fallback: list[str] = Field(default_factory=list)
    retries: int = 0
    cache: dict[str, Any] = Field(default_factory=dict)
    mirror: str | None = None
    guardrails: dict[str, Any] = Field(default_factory=dict)


class RouteDecision(BaseModel):
    """What the gateway did with one request."""

    route: str | None = None
    target: str | None = None
    model: str | None = None
    weights: dict[str, float] = Field(default_factory=dict)
    fallback_hops: list[str] = Field(default_factory=list)
    retries: int = 0
    cache_hit: bool = False
    cache_similarity: float | None = None
    mirror_target: str | None = None
    guardrails: list[dict[str, Any]] = Field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    config_hash: str | None = None
