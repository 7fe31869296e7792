"""``POST /v1/traces``: the OTLP/HTTP trace receiver.

Status semantics follow the OTLP spec (opentelemetry-proto 1.11):

* 200 with ``ExportTraceServiceResponse``; ``partial_success`` names the rejected spans (bad
  ids, wrong types, values nested too deep or too large); clients must not retry it. A 200 is
  sent only after the accepted spans are committed.
* 400 for a body that cannot be decoded at all (``google.rpc.Status`` for protobuf requests).
* 413 when the body, compressed or inflated, is over ``tracing.max_body_bytes``.
* 415 for a Content-Type other than protobuf or JSON, or an unknown Content-Encoding.
* 503 + ``Retry-After`` when the writer is saturated or the store is down (retried by every
  OTLP exporter generation); never 500 for a retryable condition.

The response uses the request's encoding. Auth is the usual API key (``Authorization: Bearer``
or ``x-api-key``); the key's project owns the spans. The server's startup hook builds the
ingest writer, the trace-completed events and the optional forwarder (see
:mod:`keel.server.ingest` and :mod:`keel.server.forward`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from keel.errors import InvalidInputError, KeelError, PayloadTooLargeError, UnavailableError
from keel.otlp.decode import (
    JSON,
    PROTOBUF,
    DecodedBatch,
    decode_request,
    estimate_spans,
    media_type,
)
from keel.otlp.encode import encode_protobuf
from keel.server.auth import AuthContext
from keel.server.deps import AppContext, get_context, require_auth
from keel.server.errors import internal_error_response, keel_error_response
from keel.server.forward import OtlpForwarder
from keel.server.ingest import IngestWriter, TraceEvents
from keel.server.limits import BodyOverCap, check_content_length, read_body_capped, read_headers
from keel.settings import resolve_secret

log = logging.getLogger("keel.otlp")

router = APIRouter(tags=["otlp"])

COMMIT_TIMEOUT_S = 60.0
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 429: 8, 503: 14}


async def startup(ctx: AppContext) -> None:
    """Start the writer thread, the trace-events dispatcher and the forwarder."""
    t = ctx.settings.tracing
    events = TraceEvents(t.trace_idle_s)
    events.start()
    writer = IngestWriter(
        ctx.store,
        queue_max_spans=t.queue_max_spans,
        batch_max_spans=t.batch_max_spans,
        events=events,
    )
    writer.start()
    ctx.extras["ingest"] = writer
    ctx.extras["trace_events"] = events
    if t.forward_endpoint:
        headers = {k: resolve_secret(v) or "" for k, v in t.forward_headers.items()}
        fwd = OtlpForwarder(t.forward_endpoint, headers)
        await fwd.start()
        ctx.extras["otlp_forwarder"] = fwd
        loop = asyncio.get_running_loop()

        def forward_local(records: list[Any]) -> None:
            # Spans written in-process (the gateway's) never came as a payload: encode them.
            def offer() -> None:
                fwd.offer(encode_protobuf([r.span for r in records]), PROTOBUF)

            loop.call_soon_threadsafe(offer)

        writer.on_local_commit = forward_local


async def shutdown(ctx: AppContext) -> None:
    """Commit what is queued, then stop everything started above."""
    fwd = ctx.extras.pop("otlp_forwarder", None)
    if fwd is not None:
        await fwd.stop()
    writer = ctx.extras.pop("ingest", None)
    if writer is not None:
        await anyio.to_thread.run_sync(writer.stop)
    events = ctx.extras.pop("trace_events", None)
    if events is not None:
        events.stop()


def _status_pb(status: int, message: str) -> bytes:
    from google.rpc import status_pb2

    return status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message).SerializeToString()


def _error(exc: KeelError, mt: str | None) -> Response:
    """The error in the request's encoding (``google.rpc.Status`` for protobuf)."""
    resp = keel_error_response(exc)
    if mt == PROTOBUF:
        return Response(
            _status_pb(exc.status, exc.message),
            status_code=exc.status,
            media_type=PROTOBUF,
            headers={k: v for k, v in resp.headers.items() if k.lower() == "retry-after"},
        )
    return resp


def _success(batch: DecodedBatch, mt: str) -> Response:
    if mt == PROTOBUF:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        msg = ExportTraceServiceResponse()
        if batch.rejected:
            msg.partial_success.rejected_spans = batch.rejected
            msg.partial_success.error_message = batch.error_message[:4096]
        return Response(msg.SerializeToString(), media_type=PROTOBUF)
    body: dict[str, Any] = {}
    if batch.rejected:
        body["partialSuccess"] = {
            "rejectedSpans": str(batch.rejected),
            "errorMessage": batch.error_message[:4096],
        }
    return Response(orjson.dumps(body), media_type=JSON)


def _writer(ctx: AppContext) -> IngestWriter:
    writer = ctx.extras.get("ingest")
    if writer is None:
        raise UnavailableError("the ingest writer is not running", retry_after=5)
    return writer  # type: ignore[no-any-return]


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON, gzip)",
    responses={
        200: {"description": "accepted (partial_success lists rejected spans)"},
        400: {"description": "undecodable body"},
        413: {"description": "body over the size cap (inflated size counts)"},
        415: {"description": "unsupported Content-Type or Content-Encoding"},
        503: {"description": "saturated or store down; retry after Retry-After"},
    },
)
async def export_traces(
    request: Request,
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> Response:
    """Receive spans; answer once they are durable."""
    h = request.headers
    return await _export(ctx, auth, h.get("content-type"), h.get("content-encoding"), request.body)


async def _export(
    ctx: AppContext,
    auth: AuthContext,
    ctype: str | None,
    encoding: str | None,
    read_body: Callable[[], Awaitable[bytes]],
) -> Response:
    """The export after authentication: both entries (the FastAPI route, used for the OpenAPI
    schema and when the fast route is off, and :func:`fast_export`) answer through here."""
    mt = media_type(ctype)
    if mt is None:
        return _error(
            InvalidInputError(
                f"unsupported Content-Type {ctype!r}",
                hint="send application/x-protobuf or application/json",
                status=415,
                code="unsupported_media_type",
            ),
            JSON,
        )
    try:
        auth.require_scope("traces:write")
        writer = _writer(ctx)
        body = await read_body()
        enc = (encoding or "identity").strip().lower()
        if enc not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise InvalidInputError(
                f"unsupported Content-Encoding {encoding!r}",
                hint="send gzip, deflate or no Content-Encoding",
                status=415,
                code="unsupported_media_type",
            )
        max_bytes = ctx.settings.tracing.max_body_bytes
        project_id = auth.project_id

        def decode() -> DecodedBatch:
            return decode_request(body, ctype, encoding, max_bytes=max_bytes, project_id=project_id)

        # Decoding, understanding and committing all run on the writer thread (one thread
        # per process holding the GIL for the whole job); this coroutine only waits.
        fut = writer.submit_decode(decode, estimate=estimate_spans(body, ctype, encoding))
        try:
            batch = await asyncio.wait_for(asyncio.wrap_future(fut), COMMIT_TIMEOUT_S)
        except TimeoutError:
            raise UnavailableError("timed out waiting for the store to commit", retry_after=5)
        # Forward only what Keel accepted, so a client retry after a 503 is not forwarded twice.
        fwd: OtlpForwarder | None = ctx.extras.get("otlp_forwarder")
        if fwd is not None:
            fwd.offer(body, ctype or mt, encoding)
    except PayloadTooLargeError as e:
        return _error(e, mt)
    except KeelError as e:
        if e.status >= 500 and not isinstance(e, UnavailableError):
            e = UnavailableError(e.message, retry_after=5)
        return _error(e, mt)
    return _success(batch, mt)


async def fast_export(ctx: AppContext, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI entry for ``POST /v1/traces`` ahead of the framework stack.

    Answers exactly as the route behind the middleware stack would (body cap by
    Content-Length and while reading → 413, auth → 401, the route's own statuses, 500 with an
    incident id on a bug) without its layers, which each bulk span body crossed chunk by chunk
    (~1 ms of the event loop's CPU per 600 KB export, which the ingest writer then waits for).
    """
    headers = read_headers(scope["headers"])
    cap = ctx.settings.tracing.max_body_bytes
    disconnected = False

    async def read_body() -> bytes:
        nonlocal disconnected
        body = await read_body_capped(receive, cap)
        if body is None:
            disconnected = True
            raise UnavailableError("client disconnected", retry_after=1)
        return body

    response: Response
    try:
        check_content_length(headers, cap)
        authz, xkey = headers.get("authorization"), headers.get("x-api-key")
        auth = ctx.auth.cached(authz, xkey)
        if auth is None:
            auth = await anyio.to_thread.run_sync(ctx.auth.authenticate, authz, xkey)
        response = await _export(
            ctx, auth, headers.get("content-type"), headers.get("content-encoding"), read_body
        )
    except BodyOverCap as e:
        response = keel_error_response(e.error)
    except KeelError as e:
        response = keel_error_response(e)
    except Exception:
        response = internal_error_response()
    if disconnected:
        return
    await response(scope, receive, send)
