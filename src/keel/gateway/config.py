"""The ``[gateway]`` table of ``keel.toml``: providers and routes as named tables.

Loading is load-then-validate: the raw dict (``settings.gateway``) is checked here against
models that reject unknown keys, cross references (a route naming an unknown provider) are
checked next, and only then is anything built. :func:`config_hash` is the hash of the
effective configuration; every request records it, so a trace says which config served it.

Example::

    [gateway.providers.openai]
    type = "openai"
    api_key = "env:OPENAI_API_KEY"

    [gateway.routes.chat]
    targets = [
      { provider = "openai", model = "gpt-4o-mini", weight = 90 },
      { provider = "fake", model = "fake:echo", weight = 10 },
    ]
    fallback = ["openai/gpt-4o"]
    retries = 2
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from keel.core.hashing import content_hash
from keel.errors import ConfigError

ProviderType = Literal["openai", "azure_openai", "anthropic", "openai_compatible", "fake", "local"]
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
BUILTIN_PROVIDERS = ("fake", "local")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    """One upstream account / server."""

    type: ProviderType
    base_url: str | None = None
    api_key: str | None = Field(None, description="a secret: write 'env:NAME'")
    api_version: str = "2024-10-21"
    models: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    allow_private_network: bool = Field(
        False, description="allow a base_url on loopback/private addresses (local servers, tests)"
    )
    connect_timeout_s: float | None = Field(None, gt=0)
    read_timeout_s: float | None = Field(None, gt=0)
    idle_timeout_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.type in ("azure_openai", "openai_compatible") and not self.base_url:
            raise ValueError(f"a provider of type {self.type} needs base_url")
        if self.base_url:
            check_base_url(
                self.base_url,
                allow_private=self.allow_private_network or self.type == "openai_compatible",
            )
        if self.api_key and not self.api_key.startswith("env:"):
            raise ValueError(
                "api_key must be a reference like 'env:OPENAI_API_KEY', not the key itself"
            )
        return self


class TargetConfig(_Strict):
    """One model at one provider, with a weight for weighted splits."""

    provider: str
    model: str
    weight: float = Field(1.0, ge=0)
    name: str | None = None
    context_window: int | None = Field(None, gt=0)
    supports_tools: bool = True
    supports_vision: bool = True
    supports_json: bool = True
    input_price_per_mtok: float | None = Field(None, ge=0)
    output_price_per_mtok: float | None = Field(None, ge=0)

    @property
    def key(self) -> str:
        """The target's name (``provider/model`` unless named)."""
        return self.name or f"{self.provider}/{self.model}"


class BreakerConfig(_Strict):
    """Circuit breaker per target."""

    failures: int = Field(5, ge=1, description="consecutive retryable failures that open it")
    cooldown_s: float = Field(30.0, gt=0)


class MirrorConfig(_Strict):
    """Shadow traffic: a copy goes to ``target``; its answer is recorded, never returned."""

    target: str
    sample: float = Field(1.0, ge=0, le=1)


class CacheConfig(_Strict):
    """Response caches for a route."""

    exact: bool = False
    semantic: bool = False
    ttl_s: float = Field(3600.0, gt=0)


class RouteConfig(_Strict):
    """A named route: the model name clients send, and what it does."""

    targets: list[TargetConfig] = Field(min_length=1)
    strategy: Literal["weighted", "fallback", "cost", "latency"] = "weighted"
    sticky: str = Field("user", description="'user', 'header:<name>', or 'none'")
    fallback: list[str] = Field(
        default_factory=list, description="routes or provider/model targets"
    )
    retries: int = Field(1, ge=0, le=10)
    backoff_ms: float = Field(100.0, ge=0)
    max_backoff_ms: float = Field(2000.0, ge=0)
    retry_after_cap_s: float = Field(30.0, ge=0)
    timeout_s: float | None = Field(None, gt=0, description="whole-request deadline")
    ttft_timeout_s: float | None = Field(
        None, gt=0, description="fail over when no first token by then"
    )
    circuit_breaker: BreakerConfig | None = Field(default_factory=BreakerConfig)
    mirror: MirrorConfig | None = None
    prompt: str | None = Field(
        None, description="'name@label' or 'name:version' from the prompt registry"
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)


class GatewayConfig(_Strict):
    """The validated ``[gateway]`` table."""

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    timeout_s: float = Field(120.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)
    idle_timeout_s: float = Field(30.0, gt=0)
    retry_budget_percent: float = Field(20.0, ge=0, le=100)
    retry_budget_min: int = Field(3, ge=0)
    max_mirror_in_flight: int = Field(32, ge=0)
    reload_interval_s: float = Field(1.0, ge=0, description="0 disables hot reload")
    direct_models: bool = Field(
        True, description="serve fake:* / local:* / provider/model names directly"
    )
    limits: dict[str, Any] = Field(
        default_factory=dict, description="passed to keel.gateway.limits"
    )
    cache: dict[str, Any] = Field(
        default_factory=dict,
        description="exact-cache backend, passed to keel.gateway.cache.build_exact_cache",
    )
    semantic_cache: dict[str, Any] = Field(
        default_factory=dict,
        description="semantic-cache bounds, passed to "
        "keel.gateway.semantic_cache.build_semantic_cache",
    )

    @model_validator(mode="after")
    def _refs(self) -> GatewayConfig:
        known = set(self.providers) | set(BUILTIN_PROVIDERS)
        for rname, r in self.routes.items():
            if rname in self.providers:
                raise ValueError(f"route '{rname}' has the name of a provider")
            for t in r.targets:
                if t.provider not in known:
                    raise ValueError(f"route '{rname}' names unknown provider '{t.provider}'")
            for ref in r.fallback + ([r.mirror.target] if r.mirror else []):
                if ref in self.routes:
                    if ref == rname:
                        raise ValueError(f"route '{rname}' falls back to itself")
                    continue
                prov = ref.split("/", 1)[0] if "/" in ref else ref.split(":", 1)[0]
                if prov not in known:
                    raise ValueError(
                        f"route '{rname}' refers to '{ref}', which is neither a route nor provider/model"
                    )
        return self


def check_base_url(url: str, *, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and, unless allowed, link-local/private/loopback hosts."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    host = parts.hostname
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host in ("localhost",) and not allow_private:
            raise ValueError(
                "base_url points at localhost; set allow_private_network = true"
            ) from None
        return
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        raise ValueError(f"base_url host {host} is not allowed")
    if (ip.is_private or ip.is_loopback) and not allow_private:
        raise ValueError(f"base_url host {host} is private; set allow_private_network = true")


def _format(exc: ValidationError) -> str:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"unknown key 'gateway.{loc}'")
        else:
            out.append(f"'gateway.{loc}': {err['msg']}")
    return "; ".join(out)


def parse_gateway_config(raw: dict[str, Any] | None) -> GatewayConfig:
    """Validate the raw ``[gateway]`` table; raises ConfigError naming the key."""
    try:
        return GatewayConfig.model_validate(raw or {})
    except ValidationError as e:
        raise ConfigError(_format(e), hint="see docs/gateway.md for the [gateway] keys") from None


def config_hash(cfg: GatewayConfig) -> str:
    """Short hash of the effective configuration (defaults filled in)."""
    return content_hash(cfg.model_dump(mode="json")).split(":")[-1][:16]
