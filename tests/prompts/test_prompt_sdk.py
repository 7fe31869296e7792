"""``keel.get_prompt`` against a real Keel server on loopback, then with the server stopped."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.core import semconv
from keel.core.prompts import PromptContent
from keel.errors import NotFoundError, UnavailableError
from keel.prompts.guards import AllowAll
from keel.prompts.registry import PromptRegistry
from keel.sdk.prompts import PromptClient
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store


@dataclass
class Running:
    url: str
    key: str
    server: uvicorn.Server
    thread: threading.Thread
    registry: PromptRegistry
    project_id: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def keel_server(tmp_path) -> Iterator[Running]:
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    proj = store.projects.add_project("demo")
    _, key = create_api_key(store, proj, "sdk")
    reg = PromptRegistry(store, guards=[AllowAll()])
    reg.push(
        proj.id,
        "footer",
        PromptContent(type="text", template="-- {{shop}}"),
    )
    reg.move_label(proj.id, "footer", "production", 1, actor="t")
    app = create_app(Settings(), store)
    app.state.keel.extras["prompt_registry"] = reg
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    run = Running(f"http://127.0.0.1:{port}", key, server, t, reg, proj.id)
    yield run
    run.stop()
    store.close()


def _push(run: Running, name: str, body: dict) -> None:
    r = httpx.post(
        f"{run.url}/api/prompts/{name}/versions",
        json=body,
        headers={"Authorization": f"Bearer {run.key}"},
    )
    assert r.status_code in (200, 201), r.text


def test_get_prompt_compiles_and_stamps_the_span(keel_server):
    run = keel_server
    _push(
        run,
        "refund-agent",
        {
            "messages": [
                {"role": "system", "content": "Refunds for {{shop}}. {{> footer}}"},
                {"role": "user", "content": "{{q}}"},
            ],
            "config": {"model": "gpt-4o-mini", "temperature": 0.1},
            "labels": ["production"],
        },
    )
    client = PromptClient(run.url, run.key)
    p = client.get_prompt("refund-agent")  # label defaults to production
    assert (p.version, p.label, p.is_fallback, p.is_stale) == (1, "production", False, False)
    assert p.config == {"model": "gpt-4o-mini", "temperature": 0.1}
    assert p.variables == ["q", "shop"]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("llm call"):
        msgs = p.compile(shop="S", q="where is it?")
    assert msgs == [
        {"role": "system", "content": "Refunds for S. -- S"},
        {"role": "user", "content": "where is it?"},
    ]
    (span,) = exporter.get_finished_spans()
    assert span.attributes[semconv.PROMPT_NAME] == "refund-agent"
    assert span.attributes[semconv.PROMPT_VERSION] == 1
    assert span.attributes[semconv.PROMPT_LABEL] == "production"
    assert span.attributes[semconv.PROMPT_HASH].startswith("sha256:")
    assert span.attributes[semconv.GEN_AI_PROMPT_NAME] == "refund-agent"
    p.compile(shop="S", q="outside any span")  # no active span: nothing to stamp, no error
    client.close()


def test_stale_cache_when_the_server_goes_down(keel_server):
    run = keel_server
    _push(run, "agent", {"template": "v1 {{x}}", "labels": ["production"]})
    now = [1000.0]
    client = PromptClient(
        run.url, run.key, cache_ttl_s=60, retry_after_s=10, timeout_s=1, clock=lambda: now[0]
    )
    assert client.get_prompt("agent").compile(x=1) == "v1 1"
    pinned = client.get_prompt("agent", version=1)
    # a label move is seen after the TTL
    _push(run, "agent", {"template": "v2 {{x}}", "labels": ["production"]})
    assert client.get_prompt("agent").version == 1  # still fresh in the cache
    now[0] += 61
    assert client.get_prompt("agent").version == 2
    run.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(run.url + "/healthz", timeout=1)
    now[0] += 61  # entry expired; the server is down
    stale = client.get_prompt("agent")
    assert stale.is_stale and stale.version == 2 and stale.compile(x=3) == "v2 3"
    # within retry_after no new attempt is made: served from the cache without a request
    t0 = time.monotonic()
    for _ in range(100):
        assert client.get_prompt("agent").is_stale
    assert time.monotonic() - t0 < 0.5
    now[0] += 11  # retried after retry_after_s: still down, still stale
    assert client.get_prompt("agent").is_stale
    # immutable versions keep being served as they are
    assert client.get_prompt("agent", version=1) == pinned
    # never fetched: the fallback keeps the app running; without one, a clear error
    fb = client.get_prompt("other", fallback=[{"role": "user", "content": "Help with {{q}}"}])
    assert fb.is_fallback and fb.compile(q="x") == [{"role": "user", "content": "Help with x"}]
    with pytest.raises(UnavailableError, match="cannot reach Keel"):
        client.get_prompt("other")
    client.close()


def test_not_found_and_fallback(keel_server):
    run = keel_server
    client = PromptClient(run.url, run.key)
    with pytest.raises(NotFoundError):
        client.get_prompt("missing")
    assert client.get_prompt("missing", fallback="Hi {{n}}").compile(n=1) == "Hi 1"
    with pytest.raises(Exception, match="not both"):
        client.get_prompt("x", version=1, label="production")
    client.close()


def test_sdk_does_not_import_the_server_stack():
    import subprocess
    import sys

    code = (
        "import sys, keel; p = keel.get_prompt('x', fallback='Hi {{n}}'); p.compile(n=1); "
        "bad = [m for m in ('fastapi', 'sqlalchemy', 'starlette', 'uvicorn', 'keel.server', 'keel.storage') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"KEEL_BASE_URL": "http://127.0.0.1:9", "PATH": ""},
    )
    assert r.returncode == 0, r.stdout + r.stderr
