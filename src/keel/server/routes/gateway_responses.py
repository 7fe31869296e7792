"""``POST /v1/responses``: OpenAI's Responses API over the chat-completions pipeline.

Registered by :mod:`keel.server.routes.gateway`; the translation is
:mod:`keel.gateway.responses_api`. The request goes through ``Gateway.chat`` / ``Gateway.stream``
unchanged, so routing, keys, limits, budgets, caches, fallbacks and spans all apply. Streams are
committed lazily like chat streams: an error before the first chunk is an HTTP status in
OpenAI's envelope; after it, the stream ends with an ``error`` event and ``response.failed``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.errors import KeelError
from keel.gateway import responses_api as rapi
from keel.server.deps import AppContext
from keel.server.errors import error_response
from keel.server.routes import gateway as g

log = logging.getLogger("keel.gateway")


def _error(e: KeelError) -> Response:
    param = e.details.get("param") if e.details else None
    if param and e.status == 400:
        return error_response(e.status, e.message, e.code, hint=e.hint, param=param)
    return g._error(e)


async def responses(request: Request) -> Response:
    """POST /v1/responses (JSON or SSE)."""
    ctx: AppContext = request.app.state.keel
    try:
        auth = g._auth(ctx, request)
        body = await g._json_body(request)
        chat = rapi.to_chat(body)
        gw = g._gateway(ctx)
        if body.get("stream"):
            return await _stream(gw, body, chat, auth, request)
        resp = await gw.chat(
            chat, project_id=auth.project_id, key=auth.key, headers=request.headers
        )
        return Response(orjson.dumps(rapi.from_chat(body, resp)), media_type=g._JSON)
    except KeelError as e:
        return _error(e)


async def _stream(
    gw: Any, body: dict[str, Any], chat: dict[str, Any], auth: Any, request: Request
) -> Response:
    chat["stream"] = True
    chat["stream_options"] = {"include_usage": True}
    agen = gw.stream(chat, project_id=auth.project_id, key=auth.key, headers=request.headers)
    try:
        first = await g.prime_stream(agen)
    except KeelError as e:
        return _error(e)
    tr = rapi.StreamTranslator(body)

    async def frames() -> AsyncIterator[bytes]:
        try:
            out = tr.start()
            if first is not None:
                out += tr.chunk(first)
            yield b"".join(rapi.sse(ev) for ev in out)
            async for c in agen:
                evs = tr.chunk(c)
                if evs:
                    yield b"".join(rapi.sse(ev) for ev in evs)
            yield b"".join(rapi.sse(ev) for ev in tr.end())
        except KeelError as e:
            yield b"".join(rapi.sse(ev) for ev in tr.fail(e))
        except Exception as e:  # never a clean end after an unexpected failure either
            log.exception("responses stream failed")
            yield b"".join(rapi.sse(ev) for ev in tr.fail(e))
        finally:
            await agen.aclose()

    return StreamingResponse(frames(), media_type="text/event-stream", headers=g._SSE_HEADERS)
