"""Integration fixtures: a real Keel server (SQLite) on a free port, the scripted fake model
server, and the Keel SDK exporting to that server over OTLP/HTTP."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

from fake_llm_server import FakeLlmServer  # noqa: E402

import keel  # noqa: E402
from keel.core.ids import new_id  # noqa: E402
from keel.core.projects import ApiKey, generate_api_key_secret, hash_api_key  # noqa: E402
from keel.core.spans import LlmCall, Span, Trace  # noqa: E402
from keel.otlp.dialects import to_llm_call  # noqa: E402


@dataclass
class KeelServer:
    """A running Keel server and a handle on its store."""

    url: str
    store: Any
    project_id: str
    api_key: str

    def wait_trace(self, trace_id: str, min_spans: int = 1, timeout: float = 15.0) -> Trace:
        """Flush the SDK and wait until the trace is stored with at least ``min_spans``."""
        keel.flush()
        deadline = time.monotonic() + timeout
        last: Trace | None = None
        while time.monotonic() < deadline:
            try:
                last = self.store.spans.get_trace(self.project_id, trace_id)
                if len(last.spans) >= min_spans:
                    return last
            except Exception:
                pass
            time.sleep(0.1)
            keel.flush()
        raise AssertionError(f"trace {trace_id} not stored in time (got {last})")


# Frameworks whose pins clash with Keel's dev environment run in a virtualenv of their own, made
# on first use from the package registry (about a minute) and kept, by a hash of what it holds,
# under KEEL_TEST_VENVS (default /tmp/keel-test-venvs) for later runs and clones.
VENVS = Path(os.environ.get("KEEL_TEST_VENVS", "/tmp/keel-test-venvs"))
# what Keel's SDK (imported from this checkout) needs in such a venv
SDK_REQUIREMENTS = (
    "opentelemetry-sdk>=1.30",
    "opentelemetry-exporter-otlp-proto-http>=1.30",
    "orjson>=3.10",
)


def side_venv(name: str, requirements: tuple[str, ...], env_var: str) -> str:
    """The Python of a venv with ``requirements`` (``env_var`` may name one instead).

    Made once and kept. If it cannot be made (no package registry), the test is skipped,
    except in CI (KEEL_TEST_REQUIRE_SERVICES=1), where that fails the test.
    """
    given = os.environ.get(env_var)
    if given:
        return given
    reqs = (*requirements, *SDK_REQUIREMENTS)
    digest = hashlib.sha256("\n".join((sys.version, *reqs)).encode()).hexdigest()[:12]
    home = VENVS / f"{name}-{digest}"
    python = home / "bin" / "python"
    done = home / ".complete"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (parallel test runs)
        if not done.exists():
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(home)],
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
            ]
            for cmd in steps:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                if r.returncode != 0:
                    msg = f"could not make the {name} test venv: {(r.stderr or r.stdout)[-1500:]}"
                    if os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1":
                        pytest.fail(msg)
                    pytest.skip(msg)
            done.write_text("\n".join(reqs))
    return str(python)


def run_side_script(python: str, script: str, fake_llm: Any, server: Any) -> str:
    """Run ``tests/integrations/<script>`` (model URL, Keel URL, API key) with a side venv's
    Python and Keel's SDK from this checkout; returns its stdout (it must exit 0)."""
    here = Path(__file__).resolve().parent
    r = subprocess.run(
        [python, str(here / script), fake_llm.url, server.url, server.api_key],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(here.parents[1] / "src")},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def llm_calls(trace: Trace, scope_prefix: str | None = None) -> list[tuple[Span, LlmCall]]:
    """The spans of a stored trace that Keel understands as model calls, by start time."""
    out = []
    for s in sorted(trace.spans, key=lambda s: s.start_time_ns):
        if scope_prefix and not (s.scope or "").startswith(scope_prefix):
            continue
        c = to_llm_call(s)
        if c is not None and c.operation in ("chat", "text_completion", "generate_content"):
            out.append((s, c))
    return out


def trace_id_of(ks: Any) -> str:
    """Hex trace id of a ``keel.span`` handle."""
    return format(ks.otel_span.get_span_context().trace_id, "032x")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        yield server


@pytest.fixture(scope="session")
def keel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelServer]:
    uvicorn = pytest.importorskip("uvicorn")
    from keel.server import create_app
    from keel.settings import Settings
    from keel.storage import open_store

    db = tmp_path_factory.mktemp("keel") / "keel.db"
    store = open_store(f"sqlite:///{db}")
    project = store.projects.add_project("integrations")
    secret = generate_api_key_secret()
    store.projects.add_api_key(
        ApiKey(
            id=new_id("key"),
            project_id=project.id,
            name="sdk",
            prefix=secret[:12],
            key_hash=hash_api_key(secret),
            created_at=datetime.now(UTC),
        )
    )
    app = create_app(Settings(), store)
    # create_app switches FastAPI's own request tracing off; without that, the SDK under test
    # (same process) would export the server's spans back to it forever.
    assert app._telemetry.get("tracing") is False
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level=os.environ.get("KEEL_TEST_LOG", "warning"),
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("keel server did not start")
        time.sleep(0.05)
    yield KeelServer(f"http://127.0.0.1:{port}", store, project.id, secret)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def keel_tracing(keel_server: KeelServer) -> Iterator[KeelServer]:
    """The SDK set up against the in-process server (strict: export errors fail the test)."""
    keel.init(
        endpoint=keel_server.url,
        api_key=keel_server.api_key,
        service_name="keel-integrations",
        project="integrations",
        schedule_delay_millis=100,
        strict=True,
    )
    yield keel_server
    keel.shutdown()


@pytest.fixture
def instrumented(keel_tracing: KeelServer) -> Iterator[KeelServer]:
    """Each test enables the integrations it needs; they are switched off afterwards."""
    yield keel_tracing
    from keel.sdk.integrations import uninstrument

    uninstrument()
