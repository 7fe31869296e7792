"""OpenAI-compatible gateway endpoints: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

These are raw Starlette routes (no FastAPI dependency injection or response validation on the
hot path); the pipeline is :class:`keel.gateway.service.Gateway`. Errors use OpenAI's
envelope; a final gateway error carries ``x-should-retry: false`` so SDK clients do not
multiply the gateway's own retries. Streams are committed lazily: headers go out with the
first chunk, so anything that fails before it still gets a proper status (and can fail over);
after it, a failure ends the stream with an in-band ``data: {"error": ...}`` frame and no
``[DONE]``, never as a clean finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.errors import InvalidInputError, KeelError, ProviderError
from keel.server.auth import AuthContext
from keel.server.deps import AppContext
from keel.server.errors import error_body, error_response, internal_error_response
from keel.server.limits import (
    BodyOverCap,
    check_content_length,
    read_body_capped,
    read_headers,
)

log = logging.getLogger("keel.gateway")

router = APIRouter(tags=["gateway"])

_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_JSON = "application/json"


def _gateway(ctx: AppContext) -> Any:
    gw = ctx.extras.get("gateway")
    if gw is None:
        raise KeelError("the gateway is not started", status=503, code="unavailable")
    return gw


_open_cache: dict[int, tuple[float, AuthContext]] = {}


def _auth(ctx: AppContext, request: Request | Any) -> AuthContext:
    h = request.headers if isinstance(request, Request) else request
    authz = h.get("authorization")
    xkey = h.get("x-api-key")
    if authz is None and xkey is None:
        # dev mode: cache the open-mode context for a second (the store lookup is not free)
        now = time.monotonic()
        hit = _open_cache.get(id(ctx))
        if hit is not None and hit[0] > now:
            return hit[1]
        a = ctx.auth.authenticate(None, None)
        _open_cache[id(ctx)] = (now + 1.0, a)
        return a
    return ctx.auth.authenticate(authz, xkey)


def _error(e: KeelError) -> Response:
    headers = {}
    retry_after = getattr(e, "retry_after", None)
    if retry_after is not None and e.status in (429, 503):
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    if isinstance(e, ProviderError):
        headers["x-should-retry"] = "false"
    if e.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(e.status, e.message, e.code, hint=e.hint, headers=headers or None)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInputError("request body is not valid JSON") from None


def _frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _error_frame(e: BaseException) -> bytes:
    if isinstance(e, KeelError):
        body = error_body(e.status, e.message, e.code)
    else:
        body = error_body(500, "internal error while streaming", "internal_error")
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions (JSON or SSE)."""
    ctx: AppContext = request.app.state.keel
    try:
        auth = _auth(ctx, request)
        raw = await request.body()
    except KeelError as e:
        return _error(e)
    return await _chat(ctx, auth, raw, request.headers)


async def _chat(ctx: AppContext, auth: AuthContext, raw: bytes, headers: Any) -> Response:
    try:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidInputError("request body is not valid JSON") from None
        gw = _gateway(ctx)
        if isinstance(body, dict) and body.get("stream"):
            return await _stream(gw, body, auth, headers)
        resp = await gw.chat(body, project_id=auth.project_id, key=auth.key, headers=headers)
        return _JsonResponse(orjson.dumps(resp))
    except KeelError as e:
        return _error(e)


class _JsonResponse(Response):
    """A JSON body with pre-built headers (no per-request header list assembly)."""

    media_type = _JSON

    def __init__(self, content: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = content
        self.raw_headers = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", b"application/json"),
        ]


async def fast_chat_completions(
    ctx: AppContext, scope: dict[str, Any], receive: Any, send: Any, max_bytes: int
) -> None:
    """Raw ASGI entry for ``POST /v1/chat/completions`` ahead of the framework stack.

    Does what the framework stack does for this one route (body cap → 413, OpenAI error
    envelope, 500 with an incident id on a bug) without its middleware layers.
    """
    headers = read_headers(scope["headers"])
    try:
        check_content_length(headers, max_bytes)
        auth = _auth(ctx, headers)
        raw = await read_body_capped(receive, max_bytes)
        if raw is None:
            return  # the client went away
        response = await _chat(ctx, auth, raw, headers)
    except BodyOverCap as e:
        response = _error(e.error)
    except KeelError as e:
        response = _error(e)
    except Exception:
        response = internal_error_response()
    await response(scope, receive, send)


async def prime_stream(agen: Any) -> Any:
    """The first chunk of a gateway stream, or None if it ended at once.

    Pulled before any byte is sent, so an error up to here (routing, keys, an upstream that
    fails before answering) is raised as :class:`KeelError` and can still become an HTTP status;
    the stream is closed first.
    """
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return None
    except KeelError:
        await agen.aclose()
        raise


async def _stream(gw: Any, body: dict[str, Any], auth: AuthContext, headers: Any) -> Response:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    agen = gw.stream(body, project_id=auth.project_id, key=auth.key, headers=headers)
    try:
        first = await prime_stream(agen)
    except KeelError as e:
        return _error(e)

    def encode(c: dict[str, Any]) -> bytes | None:
        if not c.get("choices") and c.get("usage") is not None:
            return _frame(c) if include_usage else None
        if include_usage:
            c["usage"] = None
        elif "usage" in c:
            c.pop("usage")
        return _frame(c)

    async def frames() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                f = encode(first)
                if f is not None:
                    yield f
            async for c in agen:
                f = encode(c)
                if f is not None:
                    yield f
            yield _DONE
        except KeelError as e:
            yield _error_frame(e)
        except Exception as e:  # never a clean end after an unexpected failure either
            log.exception("gateway stream failed")
            yield _error_frame(e)
        finally:
            await agen.aclose()

    return StreamingResponse(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def embeddings(request: Request) -> Response:
    """POST /v1/embeddings."""
    ctx: AppContext = request.app.state.keel
    try:
        auth = _auth(ctx, request)
        body = await _json_body(request)
        out = await _gateway(ctx).embed(
            body, project_id=auth.project_id, key=auth.key, headers=request.headers
        )
        return Response(orjson.dumps(out), media_type=_JSON)
    except KeelError as e:
        return _error(e)


async def list_models(request: Request) -> Response:
    """GET /v1/models: the model names the caller may use."""
    ctx: AppContext = request.app.state.keel
    try:
        auth = _auth(ctx, request)
        names = _gateway(ctx).models(auth.key)
    except KeelError as e:
        return _error(e)
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "keel"} for n in names]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)


async def get_model(request: Request) -> Response:
    """GET /v1/models/{model}."""
    ctx: AppContext = request.app.state.keel
    name = request.path_params["model"]
    try:
        auth = _auth(ctx, request)
        if name not in _gateway(ctx).models(auth.key):
            return error_response(404, f"model '{name}' does not exist", "model_not_found")
    except KeelError as e:
        return _error(e)
    return Response(
        orjson.dumps({"id": name, "object": "model", "created": 0, "owned_by": "keel"}),
        media_type=_JSON,
    )


router.add_route(
    "/v1/chat/completions", chat_completions, methods=["POST"], include_in_schema=False
)
router.add_route("/v1/embeddings", embeddings, methods=["POST"], include_in_schema=False)
router.add_route("/v1/models", list_models, methods=["GET"], include_in_schema=False)
router.add_route("/v1/models/{model:path}", get_model, methods=["GET"], include_in_schema=False)


async def responses(request: Request) -> Response:
    """POST /v1/responses: the Responses API, translated onto the chat pipeline."""
    from keel.server.routes.gateway_responses import responses as handle

    return await handle(request)


router.add_route("/v1/responses", responses, methods=["POST"], include_in_schema=False)


def _sink(ctx: AppContext) -> Any:
    def write(recs: list[Any]) -> None:
        from keel.storage.spans import SpanRecord

        records = [SpanRecord(s, llm) for s, llm in recs]
        writer = ctx.extras.get("ingest")
        if writer is not None:
            try:
                # on the emitter's worker thread: wait while the writer holds its bound of
                # in-process spans (the emitter's own bounded queue takes the backlog)
                writer.enqueue(records, wait_s=10.0)
                return
            except KeelError:  # writer full or stopped (at shutdown): write directly
                pass
        spans = getattr(ctx.store, "spans", None)
        if spans is not None:
            spans.add_spans(records)

    return write


def _optional_components(ctx: AppContext, gw_cfg: dict[str, Any]) -> dict[str, Any]:
    """Limiter, caches and the prompt resolver, when their modules are installed."""
    out: dict[str, Any] = {}
    try:
        from keel.gateway.limits import build_limiter

        out["limiter"] = build_limiter(
            gw_cfg.get("limits") or {}, ledger=getattr(ctx.store, "gateway", None)
        )
    except ImportError:
        pass
    if getattr(ctx.store, "prompts", None) is not None:
        try:
            from keel.gateway.prompting import RegistryPromptResolver
            from keel.prompts.registry import PromptRegistry

            out["prompt_resolver"] = RegistryPromptResolver(PromptRegistry(ctx.store))
        except ImportError:
            pass
    routes = (gw_cfg.get("routes") or {}).values()
    try:
        from keel.gateway.cache import build_exact_cache

        out["cache"] = build_exact_cache(gw_cfg.get("cache") or {})  # [gateway.cache]
    except ImportError:
        pass
    if any((r.get("cache") or {}).get("semantic") for r in routes if isinstance(r, dict)):
        try:
            from keel.gateway.semantic_cache import build_semantic_cache

            # [gateway.semantic_cache]; the embedder loads on first use
            out["semantic_cache"] = build_semantic_cache(gw_cfg.get("semantic_cache"))
        except ImportError:
            pass
    return out


async def startup(ctx: AppContext) -> None:
    """Build the gateway from ``settings.gateway`` (and watch its file for changes)."""
    from keel.gateway.service import Gateway

    raw = ctx.settings.gateway
    gw = Gateway(raw, source=ctx.settings.source, sink=_sink(ctx), **_optional_components(ctx, raw))
    await gw.start()
    ctx.extras["gateway"] = gw


async def shutdown(ctx: AppContext) -> None:
    """Close the upstream session and flush the last spans."""
    gw = ctx.extras.pop("gateway", None)
    if gw is not None:
        await gw.close()
    _open_cache.pop(id(ctx), None)
