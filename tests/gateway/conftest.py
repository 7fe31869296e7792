"""Real servers on loopback: the mock upstream (aiohttp) and Keel under uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from _serve import serve_in_thread
from aiohttp import web

from keel.gateway.mockupstream import LOG_KEY, make_app
from keel.server.app import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store


def _free_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


@dataclass
class Upstream:
    """The running mock upstream."""

    url: str
    app: web.Application

    @property
    def log(self) -> list[tuple[str, float]]:
        """(model, time) of every request seen."""
        return self.app[LOG_KEY]

    def calls(self, model: str) -> list[float]:
        """Times of the requests for one model."""
        return [t for m, t in list(self.log) if m == model]


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """The mock OpenAI/Anthropic upstream on a free loopback port."""
    app = make_app()
    loop = asyncio.new_event_loop()
    sock = _free_socket()
    port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.SockSite(runner, sock)
        loop.run_until_complete(site.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    started.wait(10)
    yield Upstream(f"http://127.0.0.1:{port}", app)
    try:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    except Exception:
        pass
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


@dataclass
class Keel:
    """A running Keel server and a key for it."""

    url: str
    secret: str
    app: Any
    store: Any

    @property
    def v1(self) -> str:
        """Base URL for OpenAI clients."""
        return f"{self.url}/v1"

    @property
    def gateway(self) -> Any:
        """The gateway object inside the server."""
        return self.app.state.keel.extras["gateway"]


@pytest.fixture(scope="session")
def mock_providers(upstream: Upstream) -> dict[str, Any]:
    """Provider tables that point at the mock upstream."""
    upstream_url = upstream.url
    return {
        "mock": {"type": "openai_compatible", "base_url": f"{upstream_url}/v1"},
        "mock2": {"type": "openai_compatible", "base_url": f"{upstream_url}/v1"},
        "mockant": {
            "type": "anthropic",
            "base_url": f"{upstream_url}/v1",
            "api_key": "env:KEEL_TEST_ANTHROPIC_KEY",
            "allow_private_network": True,
        },
        "mockazure": {
            "type": "azure_openai",
            "base_url": upstream_url,
            "api_key": "env:KEEL_TEST_AZURE_KEY",
            "allow_private_network": True,
        },
    }


@pytest.fixture
def keel_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Keel]]:
    """Factory: start Keel (memory store) with a ``[gateway]`` table; stopped after the test."""
    monkeypatch.setenv("KEEL_TEST_ANTHROPIC_KEY", "sk-ant-secret-do-not-leak")
    monkeypatch.setenv("KEEL_TEST_AZURE_KEY", "azure-secret-do-not-leak")
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        gateway: dict[str, Any] | None = None, *, source: str | None = None, **settings_kw: Any
    ) -> Keel:
        settings = Settings(
            store={"url": "memory://"}, gateway=gateway or {}, source=source, **settings_kw
        )
        store = open_store("memory://")
        project = store.projects.add_project("gw-test")
        _, secret = create_api_key(store, project)
        app = create_app(settings, store)
        server, t, port = serve_in_thread(app)
        servers.append((server, t))
        return Keel(f"http://127.0.0.1:{port}", secret, app, store)

    yield start
    for server, t in servers:
        server.should_exit = True
        t.join(10)
