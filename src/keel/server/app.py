"""``create_app(settings, store)``: the one ASGI app that serves every part of Keel.

Each resource lives in its own module under ``keel.server.routes``. A module exposes
``router`` and may expose ``async def startup(ctx)`` / ``async def shutdown(ctx)`` for
background work it owns (the ingest writer, gateway clients); the app's lifespan calls them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from keel import __version__
from keel.server.auth import Authenticator, is_loopback
from keel.server.deps import AppContext
from keel.server.errors import install_error_handlers
from keel.server.limits import BodyLimitMiddleware
from keel.settings import Settings
from keel.storage.base import Store

log = logging.getLogger("keel.server")

# Router modules, in mount order. Each has `router`, optionally `startup`/`shutdown`.
ROUTER_MODULES = [
    "keel.server.routes.gateway",  # first: the hot path matches before ~30 other routes
    "keel.server.routes.health",
    "keel.server.routes.projects",
    "keel.server.routes.ui",
    "keel.server.routes.prompts",
    "keel.server.routes.datasets",
    "keel.server.routes.otlp",
    "keel.server.routes.traces",
    "keel.server.routes.evals",
]


class _KeelApp(FastAPI):
    """FastAPI, with the gateway's hot route answered ahead of the middleware stack.

    ``POST /v1/chat/completions`` goes straight to a raw ASGI handler that applies the body cap
    and error envelope itself (profiled: the framework's ~7 middleware layers cost more than
    Keel's whole routing + key check per request). Everything else takes the normal path.
    """

    keel_fast_chat: Any = None
    keel_fast_otlp: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/v1/chat/completions" and self.keel_fast_chat is not None:
                await self.keel_fast_chat(scope, receive, send)
                return
            if path == "/v1/traces" and self.keel_fast_otlp is not None:
                await self.keel_fast_otlp(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _fast_chat(ctx: AppContext, max_bytes: int) -> Any:
    from keel.server.routes.gateway import fast_chat_completions

    async def handle(scope: Any, receive: Any, send: Any) -> None:
        await fast_chat_completions(ctx, scope, receive, send, max_bytes)

    return handle


def _fast_otlp(ctx: AppContext) -> Any:
    from keel.server.routes.otlp import fast_export

    async def handle(scope: Any, receive: Any, send: Any) -> None:
        await fast_export(ctx, scope, receive, send)

    return handle


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the app. Nothing starts until the ASGI server runs its lifespan."""
    settings = settings or Settings()
    if store is None:
        from keel.storage import open_store

        store = open_store(settings.store.url)
    allow_open = is_loopback(settings.server.host) and settings.server.allow_open is not False
    auth = Authenticator(store=store, allow_open=allow_open)
    ctx = AppContext(settings=settings, store=store, auth=auth)
    modules = [importlib.import_module(m) for m in ROUTER_MODULES]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started: list[Any] = []
        try:
            for mod in modules:
                if hasattr(mod, "startup"):
                    await mod.startup(ctx)
                    started.append(mod)
            yield
        finally:
            for mod in reversed(started):
                if hasattr(mod, "shutdown"):
                    try:
                        await mod.shutdown(ctx)
                    except Exception:
                        log.exception("shutdown of %s failed", mod.__name__)

    app = _KeelApp(
        title="Keel",
        version=__version__,
        description="LLMOps reliability platform: traces, prompts, datasets, evaluators, gateway, releases.",
        lifespan=lifespan,
        # FastAPI's own request tracing goes to the process-global OTel provider: in a process
        # that also runs the Keel SDK, every OTLP export would create spans that are exported
        # to /v1/traces again, forever. Keel records what matters (gateway, ingest) itself.
        telemetry={"tracing": False},
    )
    app.state.keel = ctx
    app.keel_fast_chat = _fast_chat(ctx, settings.server.max_body_bytes)
    app.keel_fast_otlp = _fast_otlp(ctx)
    install_error_handlers(app)
    for mod in modules:
        app.include_router(mod.router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.server.max_body_bytes,
        overrides={"/v1/traces": settings.tracing.max_body_bytes},
    )
    return app
