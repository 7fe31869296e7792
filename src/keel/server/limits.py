"""ASGI middleware that caps request bodies before any handler reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel.errors import InvalidInputError, KeelError
from keel.server.errors import error_body

ASGIApp = Any


class BodyLimitMiddleware:
    """Reject bodies over ``max_bytes`` with 413, by Content-Length or while streaming.

    Paths in ``overrides`` (prefix → cap) get their own cap (OTLP bodies may be larger).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _cap(self, path: str) -> int:
        for prefix, cap in self.overrides.items():
            if path.startswith(prefix):
                return cap
        return self.max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self._cap(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_error(send, 400, "invalid Content-Length header", "invalid_request")
                    return
                if length > cap:
                    await _send_error(
                        send,
                        413,
                        f"request body of {length} bytes is over the {cap}-byte limit",
                        "payload_too_large",
                    )
                    return
                break
        seen = 0
        too_big = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    too_big = True
                    raise _BodyTooLarge()
            return message

        response_started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _send_error(
                    send, 413, f"request body is over the {cap}-byte limit", "payload_too_large"
                )
        except Exception:
            if too_big and not response_started:
                await _send_error(
                    send, 413, f"request body is over the {cap}-byte limit", "payload_too_large"
                )
            else:
                raise


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` so frameworks that wrap body errors still answer 413."""

    def __init__(self) -> None:
        super().__init__(413, "request body is over the size limit")


async def _send_error(send: Any, status: int, message: str, code: str) -> None:
    body = orjson.dumps(error_body(status, message, code))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------ for raw ASGI fast routes


class ReqHeaders(dict[str, str]):
    """Request headers read once into a dict (names lower-cased by the server; first value
    wins, as with Starlette's ``Headers.get``): the pipeline looks up several of them."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def getlist(self, key: str) -> list[str]:
        v = dict.get(self, key.lower())
        return [] if v is None else [v]


def read_headers(raw: Any) -> ReqHeaders:
    """An ASGI scope's raw header list as :class:`ReqHeaders`."""
    h = ReqHeaders()
    for k, v in raw:
        name = k.decode("latin-1").lower()
        if name not in h:
            h[name] = v.decode("latin-1")
    return h


class BodyOverCap(Exception):
    """The body grew past the cap while it was read (``error`` is the 413 to answer with).

    Not a :class:`KeelError`, so a handler's own error mapping cannot turn it into another
    format: fast routes answer it with the JSON envelope, as :class:`BodyLimitMiddleware` does.
    """

    def __init__(self, cap: int) -> None:
        super().__init__(f"request body is over the {cap}-byte limit")
        self.error = KeelError(str(self), status=413, code="payload_too_large")


def check_content_length(headers: Mapping[str, str], cap: int) -> None:
    """400 for a malformed ``Content-Length``, 413 when it announces more than ``cap``."""
    cl = headers.get("content-length")
    if cl is None:
        return
    try:
        length = int(cl)
    except ValueError:
        raise InvalidInputError("invalid Content-Length header") from None
    if length > cap:
        raise KeelError(
            f"request body of {length} bytes is over the {cap}-byte limit",
            status=413,
            code="payload_too_large",
        )


async def read_body_capped(receive: Any, cap: int) -> bytes | None:
    """The whole request body, or None if the client went away; :class:`BodyOverCap` past
    ``cap`` bytes (counted as they arrive, whatever Content-Length said)."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        part = msg.get("body", b"")
        if part:
            seen += len(part)
            if seen > cap:
                raise BodyOverCap(cap)
            chunks.append(part)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
