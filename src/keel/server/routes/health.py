"""Liveness and readiness. No auth: orchestrators call these."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse

from keel import __version__
from keel.errors import KeelError
from keel.server.deps import AppContext, get_context

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Readiness: the store is reachable", response_model=None)
def readyz(ctx: AppContext = Depends(get_context)) -> JSONResponse:
    """200 when the store answers, 503 otherwise."""
    try:
        ctx.store.ping()
    except KeelError as e:
        return JSONResponse(
            {"status": "unavailable", "store": ctx.store.backend, "error": e.message},
            status_code=503,
        )
    except Exception as e:  # a driver error we did not map still means "not ready"
        return JSONResponse(
            {"status": "unavailable", "store": ctx.store.backend, "error": type(e).__name__},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "store": ctx.store.backend})
