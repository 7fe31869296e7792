"""From a validated config to an immutable router snapshot: model name -> policy tree.

A :class:`RouterSnapshot` is built once per configuration and never mutated; a hot reload
builds a new one and swaps the reference, so requests in flight finish on the snapshot they
started with. State that must outlive a reload (circuit breakers, latency statistics, the
upstream HTTP session) is passed in from the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.errors import ConfigError, NotFoundError
from keel.gateway.config import (
    GatewayConfig,
    ProviderConfig,
    RouteConfig,
    TargetConfig,
    config_hash,
)
from keel.gateway.policies.breaker import BreakerState, CircuitBreaker
from keel.gateway.policies.chain import Chain, CostOrder, FallbackOrder, LatencyOrder, WeightedOrder
from keel.gateway.policies.mirror import Mirror, MirrorPool, MirrorRecorder
from keel.gateway.policies.retry import Retry, RetryBudget
from keel.gateway.policies.target import Targeted, TargetInfo
from keel.gateway.pricing import model_price
from keel.gateway.provider import Provider
from keel.gateway.providers.anthropic import AnthropicProvider
from keel.gateway.providers.fake import FakeProvider
from keel.gateway.providers.http import HttpClient, Timeouts
from keel.gateway.providers.local import LocalProvider
from keel.gateway.providers.openai import (
    AzureOpenAIProvider,
    OpenAICompatibleProvider,
    OpenAIProvider,
)
from keel.settings import resolve_secret

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
MAX_DIRECT = 1024


@dataclass
class Shared:
    """What survives reloads: the HTTP client, breaker and latency state, budgets, pools."""

    http: HttpClient = field(default_factory=HttpClient)
    breakers: dict[str, BreakerState] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    mirror_pool: MirrorPool = field(default_factory=MirrorPool)
    fake: FakeProvider = field(default_factory=FakeProvider)
    local: LocalProvider = field(default_factory=LocalProvider)

    def breaker(self, key: str) -> BreakerState:
        """The breaker state of one target."""
        st = self.breakers.get(key)
        if st is None:
            st = self.breakers[key] = BreakerState()
        return st


@dataclass(frozen=True)
class RouteRuntime:
    """A resolved model name: the policy tree and what the pipeline needs around it."""

    name: str
    provider: Provider
    config: RouteConfig | None
    sticky_header: str | None = None
    sticky_user: bool = True
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    timeout_s: float = 120.0


def build_provider(name: str, cfg: ProviderConfig, shared: Shared, gw: GatewayConfig) -> Provider:
    """Instantiate one configured provider (resolving its ``env:`` key now)."""
    if cfg.type == "fake":
        return shared.fake
    if cfg.type == "local":
        return shared.local
    key = resolve_secret(cfg.api_key) if cfg.api_key else None
    timeouts = Timeouts(
        connect_s=cfg.connect_timeout_s or gw.connect_timeout_s,
        read_s=cfg.read_timeout_s or gw.read_timeout_s,
        idle_s=cfg.idle_timeout_s or gw.idle_timeout_s,
    )
    common: dict[str, Any] = {
        "api_key": key,
        "http": shared.http,
        "models": cfg.models,
        "headers": cfg.headers,
        "timeouts": timeouts,
    }
    if cfg.type == "anthropic":
        return AnthropicProvider(
            name, base_url=cfg.base_url or DEFAULT_BASE_URLS["anthropic"], **common
        )
    if cfg.type == "azure_openai":
        return AzureOpenAIProvider(
            name, base_url=str(cfg.base_url), api_version=cfg.api_version, **common
        )
    if cfg.type == "openai_compatible":
        return OpenAICompatibleProvider(name, base_url=str(cfg.base_url), **common)
    if cfg.type == "openai" and key is None:
        raise ConfigError(f"provider '{name}' (openai) needs api_key = \"env:NAME\"")
    return OpenAIProvider(name, base_url=cfg.base_url or DEFAULT_BASE_URLS["openai"], **common)


class RouterSnapshot:
    """Immutable routing state for one effective configuration."""

    def __init__(
        self, cfg: GatewayConfig, shared: Shared, record_mirror: MirrorRecorder | None = None
    ) -> None:
        self.config = cfg
        self.hash = config_hash(cfg)
        self.shared = shared
        shared.retry_budget.percent = cfg.retry_budget_percent
        shared.retry_budget.minimum = cfg.retry_budget_min
        shared.mirror_pool.max_in_flight = cfg.max_mirror_in_flight
        self._record_mirror = record_mirror
        self.providers: dict[str, Provider] = {"fake": shared.fake, "local": shared.local}
        self.provider_types: dict[str, str] = {"fake": "fake", "local": "local"}
        for name, pc in cfg.providers.items():
            self.providers[name] = build_provider(name, pc, shared, cfg)
            self.provider_types[name] = pc.type
        self.routes: dict[str, RouteRuntime] = {}
        for rname in cfg.routes:
            self._route(rname, set())
        self._direct: dict[str, RouteRuntime] = {}

    # -- building -------------------------------------------------------------------------
    def _info(self, t: TargetConfig) -> TargetInfo:
        ptype = self.provider_types[t.provider]
        price = model_price(ptype, t.model)
        inp = (
            t.input_price_per_mtok / 1e6
            if t.input_price_per_mtok is not None
            else (price[0] if price else None)
        )
        out = (
            t.output_price_per_mtok / 1e6
            if t.output_price_per_mtok is not None
            else (price[1] if price else None)
        )
        if ptype == "fake" and inp is None:
            inp, out = 0.0, 0.0
        cw = t.context_window or (price[2] if price else None)
        return TargetInfo(
            key=t.key,
            provider=t.provider,
            model=t.model,
            weight=t.weight,
            context_window=cw,
            input_price=inp,
            output_price=out,
            supports_tools=t.supports_tools,
            supports_vision=t.supports_vision,
            supports_json=t.supports_json,
        )

    def _leaf(self, info: TargetInfo, rc: RouteConfig | None) -> Provider:
        p: Provider = Targeted(
            self.providers[info.provider], info, ttft_timeout_s=rc.ttft_timeout_s if rc else None
        )
        if rc is not None and rc.circuit_breaker is not None:
            p = CircuitBreaker(
                p,
                self.shared.breaker(info.key),
                failures=rc.circuit_breaker.failures,
                cooldown_s=rc.circuit_breaker.cooldown_s,
            )
        if rc is not None and rc.retries > 0:
            p = Retry(
                p,
                retries=rc.retries,
                budget=self.shared.retry_budget,
                backoff_s=rc.backoff_ms / 1000.0,
                max_backoff_s=rc.max_backoff_ms / 1000.0,
                retry_after_cap_s=rc.retry_after_cap_s,
            )
        return p

    def _ref_target(self, ref: str) -> TargetConfig:
        if ref.startswith(("fake:", "local:")):
            return TargetConfig(provider=ref.split(":", 1)[0], model=ref, name=ref)
        prov, _, model = ref.partition("/")
        return TargetConfig(provider=prov, model=model)

    def _route(self, rname: str, building: set[str]) -> RouteRuntime:
        if rname in self.routes:
            return self.routes[rname]
        if rname in building:
            raise ConfigError(f"gateway routes form a fallback cycle through '{rname}'")
        building.add(rname)
        rc = self.config.routes[rname]
        infos = [self._info(t) for t in rc.targets]
        leaves = [self._leaf(i, rc) for i in infos]
        prices = {
            i.key: (i.input_price or 0.0, i.output_price or 0.0)
            for i in infos
            if i.input_price is not None
        }
        on_latency = None
        if rc.strategy == "weighted":
            order: Any = WeightedOrder(rname, infos)
        elif rc.strategy == "fallback":
            order = FallbackOrder(len(infos))
        elif rc.strategy == "cost":
            order = CostOrder(infos)
        else:
            order = LatencyOrder(infos, self.shared.latency)
            on_latency = order.observe
        main: Provider = Chain(rname, leaves, order, on_latency=on_latency)
        if rc.fallback:
            chain: list[Provider] = [main]
            for ref in rc.fallback:
                if ref in self.config.routes:
                    sub = self._route(ref, building)
                    chain.append(sub.provider)
                    prices.update(sub.prices)
                else:
                    info = self._info(self._ref_target(ref))
                    chain.append(self._leaf(info, rc))
                    if info.input_price is not None:
                        prices[info.key] = (info.input_price, info.output_price or 0.0)
            main = Chain(rname, chain, FallbackOrder(len(chain)))
        if rc.mirror is not None and self._record_mirror is not None:
            ref = rc.mirror.target
            shadow = (
                self._route(ref, building).provider
                if ref in self.config.routes
                else self._leaf(self._info(self._ref_target(ref)), None)
            )
            main = Mirror(
                main,
                shadow,
                sample=rc.mirror.sample,
                pool=self.shared.mirror_pool,
                record=self._record_mirror,
            )
        sticky_header = rc.sticky[7:].lower() if rc.sticky.startswith("header:") else None
        rt = RouteRuntime(
            name=rname,
            provider=main,
            config=rc,
            sticky_header=sticky_header,
            sticky_user=rc.sticky == "user",
            prices=prices,
            timeout_s=rc.timeout_s or self.config.timeout_s,
        )
        self.routes[rname] = rt
        building.discard(rname)
        return rt

    # -- resolving ------------------------------------------------------------------------
    def resolve(self, model: str) -> RouteRuntime:
        """The runtime for a model name a client sent; 404 when nothing serves it."""
        rt = self.routes.get(model) or self._direct.get(model)
        if rt is not None:
            return rt
        if self.config.direct_models:
            info: TargetInfo | None = None
            if model.startswith("fake:"):
                info = TargetInfo(
                    key=model, provider="fake", model=model, input_price=0.0, output_price=0.0
                )
            elif model.startswith("local:"):
                if model != "local:smollm2":
                    raise NotFoundError(
                        f"model '{model}' does not exist",
                        code="model_not_found",
                        hint="local:smollm2 is the bundled local model",
                    )
                info = TargetInfo(
                    key=model, provider="local", model=model, input_price=0.0, output_price=0.0
                )
            elif "/" in model and model.split("/", 1)[0] in self.config.providers:
                info = self._info(self._ref_target(model))
            if info is not None:
                rt = RouteRuntime(
                    name=model,
                    provider=Targeted(self.providers[info.provider], info),
                    config=None,
                    prices={info.key: (info.input_price or 0.0, info.output_price or 0.0)}
                    if info.input_price is not None
                    else {},
                    timeout_s=self.config.timeout_s,
                )
                if len(self._direct) >= MAX_DIRECT:
                    self._direct.clear()
                self._direct[model] = rt
                return rt
        raise NotFoundError(
            f"model '{model}' does not exist",
            code="model_not_found",
            hint="use a route name from [gateway.routes], provider/model, fake:echo or local:smollm2",
        )

    def model_names(self) -> list[str]:
        """Names GET /v1/models lists: routes, configured provider/model pairs, built-ins."""
        names = list(self.routes)
        for pname, pc in self.config.providers.items():
            names.extend(f"{pname}/{m}" for m in pc.models)
        if self.config.direct_models:
            names.extend(self.shared.fake.models())
            names.extend(self.shared.local.models())
        return names
