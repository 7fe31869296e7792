"""FastAPI dependencies shared by routers: the app context and the caller's auth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Request

from keel.server.auth import AuthContext, Authenticator
from keel.settings import Settings
from keel.storage.base import Store


@dataclass
class AppContext:
    """What every handler may need; one per app, on ``app.state.keel``."""

    settings: Settings
    store: Store
    auth: Authenticator
    started_open: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


async def get_context(request: Request) -> AppContext:
    """The app context (async: FastAPI runs a plain ``def`` dependency on a worker thread)."""
    ctx: AppContext = request.app.state.keel
    return ctx


async def require_auth(request: Request) -> AuthContext:
    """Authenticate the request (401 in the envelope when it fails).

    Answered on the event loop from the key cache; only a miss, which reads the store, goes
    to a worker thread (two thread hops per request saved: ~0.1 ms of CPU each)."""
    ctx: AppContext = request.app.state.keel
    headers = request.headers
    authorization, x_api_key = headers.get("authorization"), headers.get("x-api-key")
    hit = ctx.auth.cached(authorization, x_api_key)
    if hit is not None:
        return hit
    return await anyio.to_thread.run_sync(ctx.auth.authenticate, authorization, x_api_key)
