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


@handle_errors
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port (default 7400)"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Start the Keel server (OTLP, gateway, REST, UI) in one process."""
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
    app = create_app(settings, store)
    err_console.print(
        f"Keel listening on http://{settings.server.host}:{settings.server.port} (store: {store.backend})"
    )
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        access_log=False,
    )
