"""Open a store from a URL."""

from __future__ import annotations

from pathlib import Path

from keel.core.clock import Clock, SystemClock
from keel.errors import ConfigError
from keel.storage.base import Store


def open_store(
    url: str = "sqlite:///.keel/keel.db", *, clock: Clock | None = None, migrate: bool = True
) -> Store:
    """Open (and by default migrate) the store at ``url``.

    ``memory://`` is the in-memory backend; ``sqlite:///path`` an embedded SQLite file in WAL
    mode; ``postgresql+psycopg://…`` a Postgres server.
    """
    clock = clock or SystemClock()
    if url.startswith("memory:"):
        from keel.storage.memory import MemoryStore

        return MemoryStore(clock=clock)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("postgres://") or url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    elif not url.startswith("postgresql+psycopg"):
        raise ConfigError(
            f"unsupported store URL {url.split('://')[0]}://…",
            hint="use memory://, sqlite:///path/keel.db or postgresql+psycopg://user@host/db",
        )
    from keel.storage.sql import SqlStore

    return SqlStore(url, clock=clock, migrate=migrate)
