"""``keel demo``: bring up Keel on SQLite and run the demo workflow against it.

Steps: open the store, create the ``demo`` project and a key, start the server, send traced
work through the SDK, then keep serving (``--no-wait`` returns instead, for tests and CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from keel.cli.common import handle_errors, state
from keel.errors import UnavailableError

console = Console()


@dataclass
class DemoContext:
    """What the demo steps share."""

    base_url: str
    api_key: str
    project: str
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """Auth header for REST calls."""
        return {"Authorization": f"Bearer {self.api_key}"}


def _start_server(settings: Any, host: str, port: int) -> subprocess.Popen[bytes]:
    """Run ``keel serve`` as a child process (the SDK in this process then talks to it over
    HTTP exactly as an application would) and wait until it answers ``/healthz``."""
    env = {**os.environ, "KEEL_STORE__URL": settings.store.url}
    cmd = [
        sys.executable,
        "-m",
        "keel",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if settings.source:
        cmd[3:3] = ["--config", settings.source]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"http://{host}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise UnavailableError(
        f"the server did not come up on {host}:{port}",
        hint=f"is the port taken? try `keel demo --port {port + 1}`",
    )


def step_send_spans(demo: DemoContext) -> str:
    """Send a small agent trace (agent → retriever → llm → tool) through the SDK."""
    import keel

    keel.init(endpoint=demo.base_url, api_key=demo.api_key, service_name="keel-demo")
    with keel.span("support-agent", kind="agent"):
        with keel.span("retrieve-policy", kind="retriever"):
            time.sleep(0.002)
        with keel.span("draft-answer", kind="llm"):
            time.sleep(0.003)
        with keel.span("lookup-order", kind="tool"):
            time.sleep(0.001)
    keel.shutdown()
    r = httpx.get(
        f"{demo.base_url}/api/traces", headers=demo.headers, params={"limit": 5}, timeout=10
    )
    r.raise_for_status()
    n = len(r.json().get("data", []))
    demo.results["traces"] = n
    return f"{n} trace(s) stored"


def step_check_auth(demo: DemoContext) -> str:
    """The key opens the REST API; no key gets 401."""
    ok = httpx.get(f"{demo.base_url}/api/projects", headers=demo.headers, timeout=10)
    ok.raise_for_status()
    anon = httpx.get(f"{demo.base_url}/api/projects", timeout=10)
    if anon.status_code != 401:
        raise RuntimeError(f"expected 401 without a key, got {anon.status_code}")
    return f"project {ok.json()['data'][0]['name']!r} with the key; 401 without it"


STEPS: list[tuple[str, Callable[[DemoContext], str]]] = [
    ("check API-key auth", step_check_auth),
    ("send an agent trace through the SDK", step_send_spans),
]


@handle_errors
def demo(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(7400, "--port"),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="keep serving after the demo (Ctrl-C to stop)"
    ),
) -> None:
    """Start Keel on SQLite and run the demo workflow."""
    from keel.cli.keys import ensure_project
    from keel.server.auth import create_api_key
    from keel.storage import open_store

    settings = state(ctx).settings
    settings.server.host, settings.server.port = host, port
    store = open_store(settings.store.url)
    project = ensure_project(store, "demo")
    _key, secret = create_api_key(store, project, f"demo-{int(time.time())}")  # type: ignore[arg-type]
    base_url = f"http://{host}:{port}"
    store.close()
    proc = _start_server(settings, host, port)
    demo_ctx = DemoContext(base_url=base_url, api_key=secret, project="demo")
    table = Table(title="Keel demo", header_style="bold cyan")
    table.add_column("step")
    table.add_column("result")
    for title, fn in STEPS:
        with console.status(title):
            try:
                table.add_row(title, fn(demo_ctx))
            except Exception as e:  # a failed step is shown, the rest still runs
                table.add_row(title, f"[red]failed: {type(e).__name__}: {e}[/]")
    console.print(table)
    console.print(
        Panel.fit(
            f"URL:     {base_url}\nAPI key: {secret}\nStore:   {settings.store.url}\n\n"
            f'curl -H "Authorization: Bearer {secret}" {base_url}/api/projects',
            title="Keel is running",
        )
    )
    if not wait:
        proc.terminate()
        proc.wait(timeout=15)
        return
    console.print("Serving; press Ctrl-C to stop.")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=15)
