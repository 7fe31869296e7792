"""The fault suite: failoverbench S01-S16 plus upstream 401 and Anthropic 529, against a real
mock upstream on loopback. The bar: no hang, no truncated answer presented as success."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from keel.storage.spans import SpanFilter

pytestmark = pytest.mark.timeout(60)

MSG = [{"role": "user", "content": "tell me a story"}]


def _t(provider: str, model: str) -> dict[str, Any]:
    return {"provider": provider, "model": model}


def uniq(behaviour: str) -> str:
    """A model name the mock treats as ``behaviour`` but counts separately."""
    return f"{uuid.uuid4().hex[:8]}:{behaviour}"


@pytest.fixture
def gw(keel_server, mock_providers):
    def start(routes: dict[str, Any], **top: Any):
        cfg = {
            "providers": mock_providers,
            "routes": routes,
            "read_timeout_s": 1.5,
            "idle_timeout_s": 1.0,
            "timeout_s": 20,
            **top,
        }
        k = keel_server(cfg)
        return k, openai.OpenAI(base_url=k.v1, api_key=k.secret, max_retries=0)

    return start


def _raw_stream(k, model: str, **extra: Any) -> tuple[int, list[str]]:
    with httpx.stream(
        "POST",
        f"{k.v1}/chat/completions",
        json={"model": model, "messages": MSG, "stream": True, **extra},
        headers={"Authorization": f"Bearer {k.secret}"},
        timeout=30,
    ) as r:
        body = r.read().decode()
    return r.status_code, [e[6:] for e in body.split("\n\n") if e.startswith("data: ")]


def _spans(k, trace_id: str, timeout: float = 5.0) -> list[Any]:
    proj = k.store.projects.find_project_by_name("gw-test")
    deadline = time.time() + timeout
    while time.time() < deadline:
        items = k.store.spans.list_spans(proj.id, SpanFilter(trace_id=trace_id)).items
        if items:
            return items
        time.sleep(0.1)
    return []


def _traceparent() -> tuple[str, dict[str, str]]:
    tid = os.urandom(16).hex()
    return tid, {"traceparent": f"00-{tid}-{os.urandom(8).hex()}-01"}


# --- S01-S07: failures before any output -------------------------------------------------


def test_s01_429_with_retry_after_is_honoured(gw, upstream):
    m = uniq("once-429-retry-2")
    _k, c = gw({"r": {"targets": [_t("mock", m)], "retries": 2}})
    r = c.chat.completions.create(model="r", messages=MSG)
    assert r.choices[0].message.content == "tell me a story"
    calls = upstream.calls(m)
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.8


def test_s02_429_forever_backs_off_then_fails_over(gw, upstream):
    m = uniq("error-429")
    _k, c = gw(
        {
            "r": {
                "targets": [_t("mock", m)],
                "retries": 3,
                "backoff_ms": 50,
                "fallback": ["mock2/echo"],
            }
        }
    )
    t0 = time.monotonic()
    r = c.chat.completions.create(model="r", messages=MSG)
    assert r.choices[0].message.content == "tell me a story" and r.model == "echo"
    assert 1 < len(upstream.calls(m)) <= 4
    assert time.monotonic() - t0 < 3


def test_s02_without_fallback_surfaces_429_bounded(gw, upstream):
    m = uniq("error-429")
    _k, c = gw({"r": {"targets": [_t("mock", m)], "retries": 3, "backoff_ms": 20}})
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="r", messages=MSG)
    assert e.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.calls(m)) == 4


def test_s03_500_once_is_retried_on_the_same_target(gw, upstream):
    m = uniq("once-500")
    _k, c = gw({"r": {"targets": [_t("mock", m)], "retries": 1, "backoff_ms": 10}})
    assert c.chat.completions.create(model="r", messages=MSG).choices[0].message.content
    assert len(upstream.calls(m)) == 2


def test_s04_503_forever_fails_over_or_surfaces_original(gw, upstream):
    m = uniq("error-503")
    _k, c = gw(
        {
            "a": {
                "targets": [_t("mock", m)],
                "retries": 1,
                "backoff_ms": 10,
                "fallback": ["mock2/echo"],
            },
            "b": {"targets": [_t("mock", m)], "retries": 1, "backoff_ms": 10},
        }
    )
    assert c.chat.completions.create(model="a", messages=MSG).model == "echo"
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="b", messages=MSG)
    assert e.value.status_code == 503 and "503" in e.value.message


def test_s05_connection_reset_fails_over(gw, upstream):
    _k, c = gw(
        {
            "r": {
                "targets": [_t("mock", uniq("reset"))],
                "retries": 1,
                "backoff_ms": 10,
                "fallback": ["mock2/echo"],
            }
        }
    )
    assert c.chat.completions.create(model="r", messages=MSG).model == "echo"
    # and streaming, too (nothing was sent yet, so failing over is allowed)
    chunks = list(c.chat.completions.create(model="r", messages=MSG, stream=True))
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "tell me a story"
    )


def test_s06_silent_upstream_is_not_retried_and_fails_over(gw, upstream):
    m = uniq("silent")
    _k, c = gw({"r": {"targets": [_t("mock", m)], "retries": 2, "fallback": ["mock2/echo"]}})
    t0 = time.monotonic()
    assert c.chat.completions.create(model="r", messages=MSG).model == "echo"
    assert time.monotonic() - t0 < 5
    assert len(upstream.calls(m)) == 1


def test_s06_silent_without_fallback_ends_within_budget(gw):
    _k, c = gw({"r": {"targets": [_t("mock", uniq("silent"))]}})
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="r", messages=MSG)
    assert e.value.status_code == 504 and time.monotonic() - t0 < 5


def test_s07_slow_first_token_triggers_failover(gw, upstream):
    _k, c = gw(
        {
            "r": {
                "targets": [_t("mock", uniq("slow-3000"))],
                "ttft_timeout_s": 0.5,
                "fallback": ["mock2/echo"],
            }
        }
    )
    t0 = time.monotonic()
    chunks = list(c.chat.completions.create(model="r", messages=MSG, stream=True))
    assert chunks[0].model == "echo" and time.monotonic() - t0 < 2.5


def test_s07_slow_first_token_without_limit_still_answers(gw):
    _k, c = gw({"r": {"targets": [_t("mock", uniq("slow-600"))]}})
    chunks = list(c.chat.completions.create(model="r", messages=MSG, stream=True))
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "tell me a story"
    )


# --- S08-S11, S14: failures mid-stream ----------------------------------------------------


@pytest.mark.parametrize("behaviour", ["cut", "abort"])
def test_s08_stream_cut_is_an_error_never_a_clean_finish(gw, behaviour):
    k, c = gw({"r": {"targets": [_t("mock", uniq(behaviour))], "fallback": ["mock2/echo"]}})
    status, events = _raw_stream(k, "r")
    assert status == 200
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "stream_cut"
    assert not any(
        json.loads(e).get("choices", [{}])[0].get("finish_reason")
        for e in events[:-1]
        if e != "[DONE]"
    )
    with pytest.raises(openai.APIError):
        list(c.chat.completions.create(model="r", messages=MSG, stream=True))


def test_s09_stall_is_detected_in_a_bounded_window_and_gateway_stays_healthy(gw):
    k, c = gw({"r": {"targets": [_t("mock", uniq("stall-30000"))]}})
    t0 = time.monotonic()
    _status, events = _raw_stream(k, "r")
    assert time.monotonic() - t0 < 5
    assert json.loads(events[-1])["error"]["code"] == "stream_stall"
    assert c.chat.completions.create(model="fake:echo", messages=MSG).choices[0].message.content


def test_s10_malformed_chunk_fails_cleanly(gw):
    k, c = gw({"r": {"targets": [_t("mock", uniq("malformed"))]}})
    _status, events = _raw_stream(k, "r")
    assert json.loads(events[-1])["error"]["code"] == "malformed_chunk" and "[DONE]" not in events
    assert c.chat.completions.create(model="fake:echo", messages=MSG).choices[0].message.content


def test_s11_missing_done_is_finalised_promptly_with_usage(gw):
    _k, c = gw({"r": {"targets": [_t("mock", uniq("nodone"))]}})
    t0 = time.monotonic()
    chunks = list(
        c.chat.completions.create(
            model="r", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert time.monotonic() - t0 < 8
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "tell me a story"
    )


def test_s14_cut_after_output_is_not_masked_by_a_fallback(gw, upstream):
    fb = uniq("echo")
    k, _c = gw({"r": {"targets": [_t("mock", uniq("cut"))], "fallback": [f"mock2/{fb}"]}})
    _status, events = _raw_stream(k, "r")
    assert json.loads(events[-1])["error"]["code"] == "stream_cut"
    assert upstream.calls(fb) == []


def test_g19_error_event_before_output_fails_over(gw):
    _k, c = gw({"r": {"targets": [_t("mock", uniq("error-event"))], "fallback": ["mock2/echo"]}})
    chunks = list(c.chat.completions.create(model="r", messages=MSG, stream=True))
    assert chunks[0].model == "echo"


# --- S12, S13: client-side 400s ------------------------------------------------------------


def test_s12_context_length_no_same_model_retry_and_larger_fallback(gw, upstream):
    m = uniq("context-length")
    _k, c = gw(
        {
            "small": {"targets": [_t("mock", m)], "retries": 3},
            "big": {"targets": [_t("mock", m)], "retries": 3, "fallback": ["mock2/echo"]},
        }
    )
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="small", messages=MSG)
    assert e.value.body["code"] == "context_length_exceeded"
    assert len(upstream.calls(m)) == 1
    assert c.chat.completions.create(model="big", messages=MSG).model == "echo"


def test_s13_content_filter_is_propagated_without_retry_or_fallback(gw, upstream):
    m = uniq("content-filter")
    fb = uniq("echo")
    _k, c = gw({"r": {"targets": [_t("mock", m)], "retries": 3, "fallback": [f"mock2/{fb}"]}})
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="r", messages=MSG)
    assert e.value.body["code"] == "content_filter"
    assert len(upstream.calls(m)) == 1 and upstream.calls(fb) == []


# --- S15, S16: flapping primary, fallback accounting ----------------------------------------


def test_s15_flapping_primary_opens_circuit_then_returns(gw, upstream):
    m = uniq("down-1500")
    _k, c = gw(
        {
            "r": {
                "targets": [_t("mock", m)],
                "retries": 0,
                "circuit_breaker": {"failures": 2, "cooldown_s": 0.5},
                "fallback": ["mock2/echo"],
            }
        }
    )
    served = []
    for _ in range(12):
        served.append(c.chat.completions.create(model="r", messages=MSG).model)
        time.sleep(0.25)
    assert all(s in (m, "echo") for s in served)
    assert served[-1] == m  # back on the primary
    # the open circuit kept traffic off the primary while it was down: far fewer than 12 tries
    down = [t for t in upstream.calls(m) if t - upstream.calls(m)[0] < 1.5]
    assert len(down) <= 4


def test_s16_fallback_accounting(gw, upstream):
    m = uniq("error-503")
    k, c = gw(
        {
            "r": {
                "targets": [_t("mock", m)],
                "retries": 1,
                "backoff_ms": 10,
                "fallback": ["mock2/echo"],
            }
        }
    )
    tid, headers = _traceparent()
    r = c.chat.completions.create(model="r", messages=MSG, extra_headers=headers)
    assert r.model == "echo" and r.usage.total_tokens > 0
    (span,) = _spans(k, tid)
    a = span.attributes
    assert a["keel.route"] == "r" and a["keel.route.target"] == "mock2/echo"
    assert a["keel.route.fallback_hops"] == [f"mock/{m}", f"mock/{m}"]
    assert a["keel.route.retries"] == 1
    assert a["gen_ai.usage.input_tokens"] == r.usage.prompt_tokens  # only the answer that counted
    assert a["keel.gateway.config_hash"] == k.gateway.snapshot.hash


# --- provider 401 and Anthropic 529 ----------------------------------------------------------


def test_upstream_401_is_not_retried_and_never_leaks_the_key(gw, upstream):
    m = uniq("error-401")
    _k, c = gw(
        {
            "r": {"targets": [_t("mockant", m)], "retries": 3},
            "f": {"targets": [_t("mockant", m)], "fallback": ["mock2/echo"]},
        }
    )
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="r", messages=MSG)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_auth"
    assert "sk-ant-secret" not in e.value.response.text
    assert len(upstream.calls(m)) == 1
    assert c.chat.completions.create(model="f", messages=MSG).model == "echo"


def test_anthropic_529_is_overloaded_and_retryable(gw, upstream):
    once = uniq("once-529")
    always = uniq("error-529")
    _k, c = gw(
        {
            "a": {"targets": [_t("mockant", once)], "retries": 1, "backoff_ms": 10},
            "b": {"targets": [_t("mockant", always)], "retries": 1, "backoff_ms": 10},
        }
    )
    assert (
        c.chat.completions.create(model="a", messages=MSG).choices[0].message.content
        == "tell me a story"
    )
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="b", messages=MSG)
    assert e.value.status_code == 503 and e.value.body["code"] == "overloaded"
    assert len(upstream.calls(always)) == 2
