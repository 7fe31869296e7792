"""``POST /v1/traces`` answered ahead of the middleware stack gives the framework route's answers.

The same requests go to two apps on one store setup: one with the raw ASGI entry
(``fast_export``, the default) and one with it switched off (the FastAPI route behind the
body-limit middleware). Status, content type, Retry-After and body must be equal.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ingest_helpers import agent_trace
from starlette.testclient import TestClient

from keel.otlp.encode import encode_json, encode_protobuf
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store

CAP = 64 * 1024


def _client(tmp_path: Path, name: str, fast: bool) -> Iterator[tuple[TestClient, str, str]]:
    store = open_store(f"sqlite:///{tmp_path}/{name}.db")
    project = store.projects.add_project("demo")
    _, secret = create_api_key(store, project, "ci")
    _, reader = create_api_key(store, project, "ro", scopes=["traces:read"])
    settings = Settings()
    settings.tracing.max_body_bytes = CAP
    app = create_app(settings, store)
    if not fast:
        app.keel_fast_otlp = None  # type: ignore[attr-defined]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, secret, reader
    store.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    fast = _client(tmp_path, "fast", True)
    slow = _client(tmp_path, "slow", False)
    yield next(fast), next(slow)
    for g in (fast, slow):
        next(g, None)


def _chunks(data: bytes, n: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


def _cases(secret: str, reader: str) -> list[tuple[str, dict[str, str], Any]]:
    auth = {"authorization": f"Bearer {secret}"}
    pb = encode_protobuf(agent_trace("fast-route"))
    big = encode_protobuf(agent_trace("big", extra={"blob": "x" * (CAP + 10)}))
    return [
        ("protobuf", {**auth, "content-type": "application/x-protobuf"}, pb),
        ("json", {**auth, "content-type": "application/json"}, encode_json(agent_trace("j"))),
        (
            "gzip",
            {**auth, "content-type": "application/x-protobuf", "content-encoding": "gzip"},
            gzip.compress(pb),
        ),
        ("x-api-key", {"x-api-key": secret, "content-type": "application/x-protobuf"}, pb),
        ("no key", {"content-type": "application/x-protobuf"}, pb),
        ("bad key", {"authorization": "Bearer nope", "content-type": "application/x-protobuf"}, pb),
        (
            "bad scheme",
            {"authorization": "Basic abc", "content-type": "application/x-protobuf"},
            pb,
        ),
        (
            "read-only key",
            {"authorization": f"Bearer {reader}", "content-type": "application/x-protobuf"},
            pb,
        ),
        ("bad content type", {**auth, "content-type": "text/plain"}, pb),
        (
            "bad encoding",
            {**auth, "content-type": "application/x-protobuf", "content-encoding": "br"},
            pb,
        ),
        (
            "garbage protobuf",
            {**auth, "content-type": "application/x-protobuf"},
            b"\xff\xfe garbage",
        ),
        ("garbage json", {**auth, "content-type": "application/json"}, b"{not json"),
        (
            "bad gzip",
            {**auth, "content-type": "application/x-protobuf", "content-encoding": "gzip"},
            b"nope",
        ),
        ("over cap by length", {**auth, "content-type": "application/x-protobuf"}, big),
        ("over cap streamed", {**auth, "content-type": "application/x-protobuf"}, "stream"),
        (
            "bad content-length",
            {**auth, "content-type": "application/x-protobuf", "content-length": "x"},
            pb,
        ),
        (
            "gzip bomb",
            {**auth, "content-type": "application/x-protobuf", "content-encoding": "gzip"},
            gzip.compress(b"\x00" * (CAP * 8)),
        ),
    ]


def _post(c: TestClient, headers: dict[str, str], body: Any, big: bytes) -> Any:
    if body == "stream":  # no Content-Length: chunked, the cap is found while reading
        return c.post("/v1/traces", content=_chunks(big), headers=headers)
    return c.post("/v1/traces", content=body, headers=headers)


def test_fast_route_answers_like_the_framework_route(pair: tuple[Any, Any]) -> None:
    (fc, fsecret, freader), (sc, ssecret, sreader) = pair
    big = encode_protobuf(agent_trace("big", extra={"blob": "x" * (CAP + 10)}))
    fast_cases = _cases(fsecret, freader)
    slow_cases = _cases(ssecret, sreader)
    statuses = set()
    for (name, fh, fb), (_, sh, sb) in zip(fast_cases, slow_cases, strict=True):
        if name == "bad content-length":
            continue  # httpx refuses to send a malformed Content-Length; see the raw test below
        a, b = _post(fc, fh, fb, big), _post(sc, sh, sb, big)
        assert a.status_code == b.status_code, name
        assert a.headers.get("content-type") == b.headers.get("content-type"), name
        assert a.headers.get("retry-after") == b.headers.get("retry-after"), name
        assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate"), name
        if a.status_code == 413 and "streamed" in name:
            # same code; the messages differ only in naming the cap
            assert a.json()["error"]["code"] == b.json()["error"]["code"] == "payload_too_large"
        else:
            assert a.content == b.content, name
        statuses.add(a.status_code)
    assert {200, 400, 401, 403, 413, 415} <= statuses


def test_fast_route_handles_a_malformed_content_length_and_disconnects(pair) -> None:
    import asyncio

    (fc, secret, _), _ = pair
    app = fc.app
    sent: list[dict[str, Any]] = []

    async def run(headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]) -> None:
        scope = {"type": "http", "method": "POST", "path": "/v1/traces", "headers": headers}
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            return queue.pop(0) if queue else {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        await app.keel_fast_otlp(scope, receive, send)

    auth = (b"authorization", f"Bearer {secret}".encode())
    ct = (b"content-type", b"application/x-protobuf")
    asyncio.run(run([auth, ct, (b"content-length", b"12x")], []))
    assert sent[0]["status"] == 400
    sent.clear()
    # the client goes away mid-body: nothing is stored, nothing is sent
    part = {"type": "http.request", "body": b"\x0a\x00", "more_body": True}
    asyncio.run(run([auth, ct], [part]))
    assert sent == []
