"""``keel serve``: run the server under uvicorn."""

from __future__ import annotations

import logging

import typer

from keel.cli.common import err_console, handle_errors, state
from keel.errors import ConfigError


def check_bind(host: str, active_keys: int, allow_open: bool | None) -> bool:
    """Decide whether the server may start, and whether it runs open.

    Returns True for open dev mode. Raises :class:`ConfigError` for an unauthenticated
    non-loopback bind.
    """
    from keel.server.auth import is_loopback

    if active_keys > 0:
        return False
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without authentication: no API key exists",
            hint="create one with `keel keys create --project NAME`, or bind to 127.0.0.1 for local dev mode",
        )
    return allow_open is not False


def tune_runtime() -> None:
    """Interpreter settings for a long-running server (``keel serve`` and the benchmarks).

    * Garbage collection: ingest allocates many short-lived objects per span; with CPython's
      default thresholds the young-generation collector ran every few spans and cost ~20 % of
      ingest CPU. Objects alive after start-up (modules, settings, the app) are frozen out of
      collection.
    * GIL switch interval 0.5 ms (default 5 ms): the event loop shares the GIL with the ingest
      writer thread, and each time it wakes it waited up to the interval for the writer to
      let go. Gateway p99 at one request in flight: 11-14 ms → 6.5-8.3 ms at the same CPU per
      request (docs/bench-gateway.md).
    """
    import gc
    import sys

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    sys.setswitchinterval(0.0005)


SETTINGS_ENV = "KEEL_SERVE_SETTINGS_JSON"


def app_from_env() -> object:
    """The app of one ``keel serve --workers N`` process (uvicorn calls this factory)."""
    import os

    from keel.server import create_app
    from keel.settings import Settings
    from keel.storage import open_store

    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    app = create_app(settings, open_store(settings.store.url))
    tune_runtime()
    return app


@handle_errors
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port (default 7400)"),
    log_level: str = typer.Option("info", "--log-level"),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="server processes sharing the port; OTLP ingest scales with them (docs/tracing.md)",
    ),
) -> None:
    """Start the Keel server (OTLP, gateway, REST, UI)."""
    import os

    import uvicorn

    from keel.server import create_app
    from keel.storage import open_store

    st = state(ctx)
    settings = st.settings
    if host:
        settings.server.host = host
    if port:
        settings.server.port = port
    store = open_store(settings.store.url)
    if workers > 1 and store.backend == "memory":
        raise ConfigError(
            "--workers needs a shared store: each process would have its own memory store",
            hint="use a SQLite file or Postgres (--store sqlite:///keel.db), or one worker",
        )
    open_mode = check_bind(
        settings.server.host, store.projects.count_active_api_keys(), settings.server.allow_open
    )
    if open_mode:
        err_console.print(
            "[bold yellow]dev mode:[/] no API key exists, so this loopback server accepts requests without one.\n"
            "          Create a key with `keel keys create` to require authentication."
        )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    err_console.print(
        f"Keel listening on http://{settings.server.host}:{settings.server.port} (store: {store.backend}"
        + (f", {workers} worker processes" if workers > 1 else "")
        + ")"
    )
    if workers > 1:
        # Each process opens the store and runs its own ingest writer (SQLite queues the
        # writers on its file lock); in-memory gateway limits and budgets are per process, so
        # shared limits need the Redis backend (docs/gateway-cache-and-limits.md).
        store.close()
        # import the app's modules here first, so a broken install fails once, in this
        # process, with its traceback (a worker dying before it serves stops the server too)
        import importlib

        from keel.server.app import ROUTER_MODULES

        for module in ROUTER_MODULES:
            importlib.import_module(module)
        from keel.server import workers as balancer

        env = {**os.environ, SETTINGS_ENV: settings.model_dump_json()}
        if balancer.supported():
            balancer.run(settings.server.host, settings.server.port, workers, log_level, env)
        else:  # no descriptor passing here: uvicorn's workers, which race for connections
            os.environ[SETTINGS_ENV] = env[SETTINGS_ENV]
            uvicorn.run(
                "keel.cli.serve:app_from_env",
                factory=True,
                workers=workers,
                host=settings.server.host,
                port=settings.server.port,
                log_level=log_level,
                access_log=False,
            )
        return
    app = create_app(settings, store)
    tune_runtime()
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        access_log=False,
    )
