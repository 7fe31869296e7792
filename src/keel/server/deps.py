"""FastAPI dependencies shared by routers: the app context and the caller's auth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def get_context(request: Request) -> AppContext:
    """The app context."""
    ctx: AppContext = request.app.state.keel
    return ctx


def require_auth(request: Request) -> AuthContext:
    """Authenticate the request (401 in the envelope when it fails)."""
    ctx: AppContext = request.app.state.keel
    headers = request.headers
    return ctx.auth.authenticate(headers.get("authorization"), headers.get("x-api-key"))
