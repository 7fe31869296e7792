"""ASGI middleware that caps request bodies before any handler reads them."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException

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
