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
from pathlib import Path
from typing import Any

import httpx
import orjson
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
    store_url: str = ""
    workdir: Path = Path(".keel/demo")
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


QUESTIONS = [
    "How long do I have to return a jacket?",
    "Can I get a refund on a sale item?",
    "My order arrived damaged, what now?",
    "Do you refund shipping costs?",
    "How do I start a return?",
    "Is there a restocking fee?",
]

PROMPT_V1 = """messages:
  - {role: system, content: "You are the support assistant of Keel Outfitters."}
  - {role: user, content: "Policy: refunds within 30 days of delivery. Customer asks: {{question}}"}
config: {model: fake:echo, temperature: 0}
message: first version
"""

PROMPT_V2 = """messages:
  - {role: system, content: "You are the support assistant of Keel Outfitters."}
  - {role: user, content: "Be brief. Customer asks: {{question}}"}
config: {model: fake:echo, temperature: 0}
message: shorter prompt (drops the policy)
"""

SUITE = """name: support-answer
target: {prompt: support-answer@VERSION, model: fake:echo}
dataset: support-questions
evaluators:
  - {name: Contains, value: "30 days", alias: states_policy}
  - {name: Refusal, alias: no_refusal}
gate:
  rules: ["states_policy.pass_rate>=0.9"]
  min_samples: 5
run: {concurrency: 8}
"""


def _cli(demo: DemoContext, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a ``keel`` command the way a user (or CI) would, against the demo's store."""
    env = {**os.environ, "KEEL_STORE__URL": demo.store_url, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        cwd=demo.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def step_gateway(demo: DemoContext) -> str:
    """Send real traffic through the OpenAI-compatible gateway with the official SDK."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{demo.base_url}/v1", api_key=demo.api_key, max_retries=0)
    answers = []
    for q in QUESTIONS:
        r = client.chat.completions.create(
            model="fake:echo", messages=[{"role": "user", "content": q}]
        )
        answers.append(r.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model="fake:echo", messages=[{"role": "user", "content": "streamed hello"}], stream=True
    )
    streamed = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    return f"{len(answers) + 1} chat completions (1 streamed: {streamed!r}), each traced with its route decision"


def step_curate(demo: DemoContext) -> str:
    """Curate production traffic into a dataset (rows keep back-links to their traces)."""
    time.sleep(1.0)  # let the gateway's spans reach the store
    r = _cli(
        demo,
        "--json",
        "datasets",
        "add-from-traces",
        "--dataset",
        "production-samples",
        "--project",
        demo.project,
        "--filter",
        "model=fake:echo",
        "--limit",
        "20",
        "--message",
        "demo curation",
    )
    if r.returncode != 0:
        raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1])
    curated = orjson.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    n_curated = curated.get("added", curated.get("rows", curated.get("row_count", "?")))
    rows = demo.workdir / "support-questions.jsonl"
    rows.write_text(
        "".join(orjson.dumps({"input": {"question": q}}).decode() + "\n" for q in QUESTIONS)
    )
    r2 = _cli(
        demo,
        "datasets",
        "push",
        str(rows),
        "--name",
        "support-questions",
        "--project",
        demo.project,
    )
    if r2.returncode != 0:
        raise RuntimeError((r2.stderr or r2.stdout).strip().splitlines()[-1])
    return f"production-samples ({n_curated} rows from traces, with back-links) and support-questions (6 rows)"


def step_prompts(demo: DemoContext) -> str:
    """Push prompt v1 and v2 from files, as code."""
    d = demo.workdir / "prompts"
    d.mkdir(exist_ok=True)
    out = []
    for text in (PROMPT_V1, PROMPT_V2):
        (d / "support-answer.yaml").write_text(text)
        r = _cli(demo, "--json", "prompts", "push", str(d), "--project", demo.project)
        if r.returncode != 0:
            raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1])
        out.append(r.stdout)
    return "support-answer v1 (states the 30-day policy) and v2 (drops it)"


def _eval(demo: DemoContext, version: int, *extra: str) -> tuple[int, str]:
    suite = demo.workdir / f"suite-v{version}.yaml"
    suite.write_text(SUITE.replace("VERSION", str(version)))
    md = demo.workdir / f"report-v{version}.md"
    r = _cli(
        demo,
        "eval",
        "run",
        str(suite),
        "--project",
        demo.project,
        "--no-progress",
        "--markdown",
        str(md),
    )
    if r.returncode not in (0, 1):
        raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1])
    return r.returncode, str(md)


def step_eval_v1(demo: DemoContext) -> str:
    """Eval-driven CI on v1, then promote it to production (a protected label)."""
    code, md = _eval(demo, 1)
    if code != 0:
        raise RuntimeError(f"v1 should pass its gate; see {md}")
    r = _cli(
        demo,
        "prompts",
        "label",
        "support-answer",
        "production",
        "1",
        "--project",
        demo.project,
        "--reason",
        "demo: gate passed",
    )
    if r.returncode != 0:
        raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1])
    return f"gate passed (exit 0); production → v1. Report: {md}"


def step_eval_v2(demo: DemoContext) -> str:
    """Eval v2: the regression fails the gate and production cannot move to it."""
    code, md = _eval(demo, 2, "--baseline", "production")
    if code != 1:
        raise RuntimeError(f"v2 should fail its gate (exit 1), got exit {code}; see {md}")
    r = _cli(
        demo,
        "prompts",
        "label",
        "support-answer",
        "production",
        "2",
        "--project",
        demo.project,
        "--reason",
        "demo: try v2",
    )
    if r.returncode == 0:
        raise RuntimeError("moving production to a version without a passed run should be refused")
    return f"gate FAILED (exit 1) and production stays on v1. Report: {md}"


STEPS: list[tuple[str, Callable[[DemoContext], str]]] = [
    ("check API-key auth", step_check_auth),
    ("send an agent trace through the SDK", step_send_spans),
    ("call the gateway with the openai SDK", step_gateway),
    ("curate datasets", step_curate),
    ("push prompt versions", step_prompts),
    ("eval v1 and promote it", step_eval_v1),
    ("eval v2 (a regression)", step_eval_v2),
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
    store_url = settings.store.url
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:////"):
        store_url = "sqlite:///" + str(Path(store_url[len("sqlite:///") :]).resolve())
    workdir = Path(".keel/demo").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    demo_ctx = DemoContext(
        base_url=base_url, api_key=secret, project="demo", store_url=store_url, workdir=workdir
    )
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
            f"URL:     {base_url}   (web UI: open it, paste the key)\nAPI key: {secret}\nStore:   {settings.store.url}\n\n"
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
