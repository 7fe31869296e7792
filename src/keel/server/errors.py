"""One error envelope for every route, mapped in one place.

The envelope is OpenAI's (``{"error": {"message", "type", "code", "param"}}``) plus a ``hint``,
so OpenAI SDK clients of the gateway and REST clients read errors the same way. Nothing ever
leaks a traceback; unexpected errors are logged with an id the response names.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from keel.core.ids import new_id
from keel.errors import KeelError, RateLimitedError, UnavailableError

log = logging.getLogger("keel.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_body(
    status: int,
    message: str,
    code: str,
    *,
    hint: str | None = None,
    param: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The envelope as a dict."""
    err: dict[str, Any] = {
        "message": message,
        "type": _TYPES.get(status, "error"),
        "code": code,
        "param": param,
    }
    if hint:
        err["hint"] = hint
    err.update(extra)
    return {"error": err}


def error_response(
    status: int,
    message: str,
    code: str,
    *,
    hint: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The envelope as a JSON response."""
    return Response(
        orjson.dumps(error_body(status, message, code, hint=hint, param=param, **extra)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def keel_error_response(exc: KeelError) -> Response:
    """Map a Keel error to its response (with Retry-After where it applies)."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitedError | UnavailableError) and retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status, exc.message, exc.code, hint=exc.hint, headers=headers or None)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    e = errs[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    where = ".".join(loc) or None
    if e.get("type") == "json_invalid":
        return "request body is not valid JSON (or not UTF-8)", None
    if e.get("type") == "extra_forbidden":
        return f"unknown field '{where}'", where
    msg = e.get("msg", "invalid value")
    return (f"{where}: {msg}" if where else msg), where


def internal_error_response() -> Response:
    """500 for a bug: logs the exception being handled under a new incident id, which the
    envelope names (call it from an ``except`` block)."""
    incident = new_id("err")
    log.exception("unhandled error %s", incident)
    return error_response(
        500,
        f"internal error (incident {incident})",
        "internal_error",
        hint="this is a bug in Keel; the server log has the details under this incident id",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the envelope."""

    @app.exception_handler(KeelError)
    async def _keel(_req: Request, exc: KeelError) -> Response:
        return keel_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> Response:
        msg, param = _validation_message(exc)
        return error_response(
            400,
            msg,
            "invalid_request",
            param=param,
            hint="see /openapi.json for the request schema",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(
            exc.status_code, str(exc.detail), code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> Response:
        return internal_error_response()
