"""``keel demo``: bring up Keel on SQLite and run the demo workflow against it.

Steps: open the store, create the ``demo`` project and a key, start the server, send traced
work through the SDK, then keep serving (``--no-wait`` returns instead, for tests and CI).
"""

from __future__ import annotations

import threading
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


def _start_server(app: Any, host: str, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="keel-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}/healthz", timeout=1).status_code == 200:
                return server, thread
        except httpx.HTTPError:
            pass
        if not thread.is_alive():
            break
        time.sleep(0.1)
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
    r = httpx.get(f"{demo.base_url}/api/traces", headers=demo.headers, params={"limit": 5}, timeout=10)
    r.raise_for_status()
    n = len(r.json().get("data", []))
    demo.results["traces"] = n
    return f"{n} trace(s) stored"


STEPS: list[tuple[str, Callable[[DemoContext], str]]] = [
    ("send an agent trace through the SDK", step_send_spans),
]


@handle_errors
def demo(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(7400, "--port"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="keep serving after the demo (Ctrl-C to stop)"),
) -> None:
    """Start Keel on SQLite and run the demo workflow."""
    from keel.cli.keys import ensure_project
    from keel.server import create_app
    from keel.server.auth import create_api_key
    from keel.storage import open_store

    settings = state(ctx).settings
    settings.server.host, settings.server.port = host, port
    store = open_store(settings.store.url)
    project = ensure_project(store, "demo")
    _key, secret = create_api_key(store, project, f"demo-{int(time.time())}")  # type: ignore[arg-type]
    base_url = f"http://{host}:{port}"
    server, thread = _start_server(create_app(settings, store), host, port)
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
        server.should_exit = True
        thread.join(timeout=10)
        return
    console.print("Serving; press Ctrl-C to stop.")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=10)
