"""Fuzz the REST surface from its own OpenAPI spec (schemathesis) against a live server.

Whatever the generated input, the server must never answer 5xx, and every 4xx must be the
error envelope. Runs against a real uvicorn server on loopback with a SQLite store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from keel.server import create_app  # noqa: E402
from keel.settings import Settings  # noqa: E402
from keel.storage import open_store  # noqa: E402

_spec = create_app(Settings(), open_store("memory://")).openapi()
# The gateway's model endpoints run real or slow models by name; they have their own fault suite.
_SKIP_PREFIXES = ("/v1/chat/completions", "/v1/embeddings", "/v1/traces")
_spec["paths"] = {p: v for p, v in _spec["paths"].items() if not p.startswith(_SKIP_PREFIXES)}
schema = schemathesis.openapi.from_dict(_spec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """``keel serve`` in a child process (a real server; no threads shared with hypothesis)."""
    from keel.server.auth import create_api_key

    url_db = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/k.db"
    store = open_store(url_db)
    _, secret = create_api_key(store, store.projects.add_project("fuzz"), "fuzz")
    store.close()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keel",
            "--store",
            url_db,
            "serve",
            "--port",
            str(port),
            "--log-level",
            "error",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url, {"Authorization": f"Bearer {secret}"}
    proc.terminate()
    proc.wait(timeout=15)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, live):  # type: ignore[no-untyped-def]
    base_url, headers = live
    response = case.call(base_url=base_url, headers=headers, timeout=20)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    ctype = response.headers.get("content-type") or ""
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if 400 <= response.status_code < 500 and ctype.startswith("application/json"):
        body = response.json()
        assert "error" in body and body["error"].get("message"), response.text[:300]
