"""Config validation, policies (weighted/sticky, cost, latency, breaker, retry budget, mirror)
and hot reload, driven through the Gateway pipeline (fake provider) or the running server."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from typing import Any

import openai
import pytest

from keel.errors import ConfigError, NotFoundError, ProviderError
from keel.gateway.config import parse_gateway_config
from keel.gateway.policies.breaker import BreakerState, CircuitBreaker
from keel.gateway.policies.retry import RetryBudget
from keel.gateway.policies.target import Targeted, TargetInfo
from keel.gateway.provider import CallContext
from keel.gateway.providers.fake import FakeProvider
from keel.gateway.service import Gateway

MSG = [{"role": "user", "content": "hi"}]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def chat(gw: Gateway, model: str, **body: Any) -> dict[str, Any]:
    return await gw.chat({"model": model, "messages": MSG, **body}, project_id="p", key=None)


# --- config -----------------------------------------------------------------------------


def test_unknown_keys_are_rejected_with_their_path():
    with pytest.raises(ConfigError, match=r"gateway\.routes\.chat\.retriez"):
        parse_gateway_config(
            {
                "routes": {
                    "chat": {"targets": [{"provider": "fake", "model": "fake:echo"}], "retriez": 2}
                }
            }
        )
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        parse_gateway_config(
            {"routes": {"chat": {"targets": [{"provider": "nope", "model": "x"}]}}}
        )


def test_provider_keys_must_be_env_references_and_urls_are_checked():
    with pytest.raises(ConfigError, match="env:"):
        parse_gateway_config({"providers": {"o": {"type": "openai", "api_key": "sk-live-123"}}})
    with pytest.raises(ConfigError, match="not allowed"):
        parse_gateway_config(
            {"providers": {"o": {"type": "openai", "base_url": "http://169.254.169.254/v1"}}}
        )
    with pytest.raises(ConfigError, match="private"):
        parse_gateway_config(
            {"providers": {"o": {"type": "openai", "base_url": "http://10.0.0.1/v1"}}}
        )


def test_missing_secret_names_the_variable(monkeypatch):
    monkeypatch.delenv("KEEL_NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="KEEL_NOPE_KEY"):
        Gateway({"providers": {"o": {"type": "openai", "api_key": "env:KEEL_NOPE_KEY"}}})


def test_config_hash_is_stable_and_changes_with_content():
    a = Gateway({"routes": {"c": {"targets": [{"provider": "fake", "model": "fake:echo"}]}}})
    b = Gateway({"routes": {"c": {"targets": [{"provider": "fake", "model": "fake:echo"}]}}})
    c = Gateway({"routes": {"c": {"targets": [{"provider": "fake", "model": "fake:text"}]}}})
    assert a.snapshot.hash == b.snapshot.hash != c.snapshot.hash


def test_fallback_cycle_is_a_config_error():
    with pytest.raises(ConfigError, match="cycle"):
        Gateway(
            {
                "routes": {
                    "a": {
                        "targets": [{"provider": "fake", "model": "fake:echo"}],
                        "fallback": ["b"],
                    },
                    "b": {
                        "targets": [{"provider": "fake", "model": "fake:echo"}],
                        "fallback": ["a"],
                    },
                }
            }
        )


def test_unknown_model_is_404():
    with pytest.raises(NotFoundError):
        run(chat(Gateway(), "gpt-nothing"))


# --- weighted / sticky ----------------------------------------------------------------------


def _split_gateway(w1: float, w2: float, sticky: str = "user") -> Gateway:
    return Gateway(
        {
            "routes": {
                "split": {
                    "targets": [
                        {"provider": "fake", "model": "fake:echo", "weight": w1},
                        {"provider": "fake", "model": "fake:text", "weight": w2},
                    ],
                    "sticky": sticky,
                }
            }
        }
    )


def test_weighted_split_is_within_binomial_ci():
    gw = _split_gateway(99, 1)

    async def go() -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(10_000):
            out[(await chat(gw, "split"))["model"]] += 1
        return out

    counts = run(go())
    p, n = 0.01, 10_000
    sd = math.sqrt(n * p * (1 - p))
    assert abs(counts["fake:text"] - n * p) < 4 * sd


def test_sticky_assignment_by_user():
    gw = _split_gateway(50, 50)

    async def go() -> None:
        for u in range(50):
            seen = {(await chat(gw, "split", user=f"user-{u}"))["model"] for _ in range(5)}
            assert len(seen) == 1

    run(go())


# --- cost / latency -------------------------------------------------------------------------


def test_cost_route_picks_cheapest_that_fits(monkeypatch):
    monkeypatch.setenv("KEEL_TEST_OPENAI_KEY", "sk-test")
    gw = Gateway(
        {
            "routes": {
                "cheap": {
                    "strategy": "cost",
                    "targets": [
                        {
                            "provider": "fake",
                            "model": "fake:text",
                            "input_price_per_mtok": 5,
                            "output_price_per_mtok": 15,
                            "context_window": 100000,
                        },
                        {
                            "provider": "fake",
                            "model": "fake:echo",
                            "input_price_per_mtok": 0.1,
                            "output_price_per_mtok": 0.4,
                            "context_window": 50,
                        },
                        {
                            "provider": "fake",
                            "model": "fake:json",
                            "input_price_per_mtok": 1,
                            "output_price_per_mtok": 2,
                            "context_window": 100000,
                            "supports_tools": False,
                        },
                    ],
                }
            }
        }
    )
    # small request: the cheapest (echo) fits
    assert run(chat(gw, "cheap", max_tokens=10))["model"] == "fake:echo"
    # too long for echo's 50-token window: json is next cheapest
    assert run(chat(gw, "cheap", max_tokens=500))["model"] == "fake:json"
    # needs tools: json cannot, so text
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert run(chat(gw, "cheap", max_tokens=500, tools=tools))["model"] == "fake:text"


def test_genai_prices_fill_in_known_models(monkeypatch):
    monkeypatch.setenv("KEEL_TEST_OPENAI_KEY", "sk-test")
    gw = Gateway(
        {
            "providers": {"oa": {"type": "openai", "api_key": "env:KEEL_TEST_OPENAI_KEY"}},
            "routes": {
                "r": {
                    "targets": [
                        {"provider": "oa", "model": "gpt-4o-mini"},
                        {"provider": "oa", "model": "gpt-4o"},
                    ],
                    "strategy": "cost",
                }
            },
        }
    )
    prices = gw.snapshot.routes["r"].prices
    assert prices["oa/gpt-4o-mini"][0] < prices["oa/gpt-4o"][0]
    assert prices["oa/gpt-4o"][0] == pytest.approx(2.5e-6)


def test_latency_route_prefers_the_faster_target():
    gw = Gateway(
        {
            "routes": {
                "fast": {
                    "strategy": "latency",
                    "targets": [
                        {"provider": "fake", "model": "fake:slow-40"},
                        {"provider": "fake", "model": "fake:echo"},
                    ],
                }
            }
        }
    )

    async def go() -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(40):
            out[(await chat(gw, "fast"))["model"]] += 1
        return out

    counts = run(go())
    assert counts["fake:echo"] > 30


# --- breaker / retry budget ------------------------------------------------------------------


def test_breaker_opens_fails_fast_probes_and_closes():
    fake = FakeProvider()
    st = BreakerState()
    info = TargetInfo(key="t", provider="fake", model="fake:error-503")
    br = CircuitBreaker(Targeted(fake, info), st, failures=2, cooldown_s=0.2)

    async def go() -> None:
        for _ in range(2):
            with pytest.raises(ProviderError) as e:
                await br.chat({"messages": MSG}, CallContext())
            assert e.value.code == "upstream_error"
        assert st.state() == "open"
        with pytest.raises(ProviderError) as e:
            await br.chat({"messages": MSG}, CallContext())
        assert e.value.code == "circuit_open"
        await asyncio.sleep(0.25)
        assert st.state() == "half_open"
        br.inner = Targeted(fake, TargetInfo(key="t", provider="fake", model="fake:echo"))
        await br.chat({"messages": MSG}, CallContext())
        assert st.state() == "closed"

    run(go())


def test_retry_budget_caps_concurrent_retries():
    b = RetryBudget(percent=20, minimum=2)
    b.active = 5
    assert b.try_acquire() and b.try_acquire()
    assert not b.try_acquire() and b.denied == 1
    b.release()
    assert b.try_acquire()


# --- mirror -----------------------------------------------------------------------------------


def test_mirror_records_shadow_beside_primary_and_never_returns_it():
    written: list[Any] = []
    gw = Gateway(
        {
            "routes": {
                "m": {
                    "targets": [{"provider": "fake", "model": "fake:echo"}],
                    "mirror": {"target": "fake:text"},
                }
            }
        },
        sink=written.extend,
    )

    async def go() -> dict[str, Any]:
        await gw.start()
        r = await chat(gw, "m")
        await gw.shared.mirror_pool.drain()
        await gw.close()
        return r

    r = run(go())
    assert r["choices"][0]["message"]["content"] == "hi"
    spans = {s.name: s for s, _ in written}
    primary = spans["chat m"]
    shadow = spans["mirror fake:text"]
    assert primary.attributes["keel.route.mirror_target"] == "fake:text"
    assert "fixed answer" in shadow.attributes["gen_ai.output.messages"]
    assert shadow.attributes["keel.route"] == "m"


def test_mirror_failure_never_reaches_the_caller():
    gw = Gateway(
        {
            "routes": {
                "m": {
                    "targets": [{"provider": "fake", "model": "fake:echo"}],
                    "mirror": {"target": "fake:error-500"},
                }
            }
        },
        sink=lambda r: None,
    )

    async def go() -> dict[str, Any]:
        r = await chat(gw, "m")
        await gw.shared.mirror_pool.drain()
        return r

    assert run(go())["choices"][0]["message"]["content"] == "hi"


# --- hot reload --------------------------------------------------------------------------------


def test_hot_reload_swaps_config_without_dropping_in_flight(keel_server, tmp_path):
    path = tmp_path / "keel.toml"
    path.write_text(
        '[gateway]\nreload_interval_s = 0.1\n[gateway.routes.r]\ntargets = [{ provider = "fake", model = "fake:slow-1500" }]\n'
    )
    from keel.settings import load_settings

    s = load_settings(path)
    k = keel_server(s.gateway, source=str(path))
    c = openai.OpenAI(base_url=k.v1, api_key=k.secret, max_retries=0)
    old_hash = k.gateway.snapshot.hash
    result: dict[str, Any] = {}

    def slow() -> None:
        result["r"] = c.chat.completions.create(model="r", messages=MSG)

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.time() + 5
    while k.gateway.shared.retry_budget.active == 0 and time.time() < deadline:
        time.sleep(0.01)  # until the slow request is in flight
    path.write_text(
        '[gateway]\nreload_interval_s = 0.1\n[gateway.routes.r]\ntargets = [{ provider = "fake", model = "fake:text" }]\n'
    )
    deadline = time.time() + 5
    while k.gateway.snapshot.hash == old_hash and time.time() < deadline:
        time.sleep(0.05)
    assert k.gateway.snapshot.hash != old_hash
    assert c.chat.completions.create(model="r", messages=MSG).model == "fake:text"
    t.join(5)
    assert result["r"].model == "fake:slow-1500"  # the in-flight request finished on the old config
    # a broken file keeps the last good config
    path.write_text("[gateway]\nreload_interval_s = 0.1\n[gateway.routes.r]\nbogus = 1\n")
    time.sleep(0.5)
    assert k.gateway.reload_errors >= 1
    assert c.chat.completions.create(model="r", messages=MSG).model == "fake:text"


# --- cache integration ------------------------------------------------------------------------


def test_exact_cache_hits_are_per_tenant_and_recorded():
    from keel.gateway.cache import ExactCache

    written: list[Any] = []
    gw = Gateway(
        {
            "routes": {
                "c": {
                    "targets": [{"provider": "fake", "model": "fake:echo"}],
                    "cache": {"exact": True, "ttl_s": 60},
                }
            }
        },
        sink=written.extend,
        cache=ExactCache(),
    )

    async def go() -> None:
        await gw.start()
        body = {"model": "c", "messages": [{"role": "user", "content": "cache me"}]}
        a = await gw.chat(dict(body), project_id="p1", key=None)
        b = await gw.chat(dict(body), project_id="p1", key=None)
        other = await gw.chat(dict(body), project_id="p2", key=None)
        assert a["id"] == b["id"] != other["id"]  # p2 did not get p1's cached answer
        chunks = [c async for c in gw.stream({**body, "stream": True}, project_id="p1", key=None)]
        assert (
            "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            == "cache me"
        )
        await gw.close()

    run(go())
    hits = [s.attributes["keel.cache.hit"] for s, _ in written]
    assert hits == [False, True, False, True]


# --- prompt routes ------------------------------------------------------------------------------


def test_route_renders_a_registry_prompt_and_follows_label_moves():
    from keel.core.prompts import PromptContent, PromptMessage
    from keel.gateway.prompting import RegistryPromptResolver
    from keel.prompts.registry import PromptRegistry
    from keel.storage import open_store

    store = open_store("memory://")
    proj = store.projects.add_project("prompts")
    reg = PromptRegistry(store, guards=[])

    def push(text: str) -> int:
        content = PromptContent(
            messages=[
                PromptMessage(role="system", content="be kind"),
                PromptMessage(role="user", content=text),
            ]
        )
        pv, _ = reg.push(proj.id, "refund-agent", content)
        return pv.version

    v1 = push("Refund order {{order}} please")
    reg.move_label(proj.id, "refund-agent", "production", v1, actor="test")
    written: list[Any] = []
    gw = Gateway(
        {
            "routes": {
                "refund": {
                    "targets": [{"provider": "fake", "model": "fake:echo"}],
                    "prompt": "refund-agent@production",
                }
            }
        },
        sink=written.extend,
        prompt_resolver=RegistryPromptResolver(reg, ttl_s=0.0),
    )

    async def go() -> list[str]:
        await gw.start()
        out = []
        r = await gw.chat(
            {"model": "refund", "variables": {"order": "A-17"}}, project_id=proj.id, key=None
        )
        out.append(r["choices"][0]["message"]["content"])
        v2 = push("Please refund {{order}} today")
        reg.move_label(proj.id, "refund-agent", "production", v2, actor="test")
        r = await gw.chat(
            {"model": "refund", "variables": {"order": "B-2"}}, project_id=proj.id, key=None
        )
        out.append(r["choices"][0]["message"]["content"])
        with pytest.raises(Exception, match="order"):
            await gw.chat({"model": "refund", "variables": {}}, project_id=proj.id, key=None)
        await gw.close()
        return out

    assert run(go()) == ["Refund order A-17 please", "Please refund B-2 today"]
    versions = [
        (s.attributes.get("keel.prompt.name"), s.attributes.get("keel.prompt.version"))
        for s, _ in written
    ]
    assert versions[:2] == [("refund-agent", v1), ("refund-agent", v1 + 1)]


def test_docs_example_config_is_valid(monkeypatch):
    import re
    import tomllib
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    block = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.setenv(var, "sk-doc")
    gw = Gateway(tomllib.loads(block)["gateway"])
    assert set(gw.snapshot.routes) == {"support", "refunds"}
    assert "openai/gpt-4o" in gw.models()
