"""The SQL backend (SQLite and Postgres through SQLAlchemy Core)."""

from __future__ import annotations

from keel.core.clock import Clock, SystemClock
from keel.storage.base import Store
from keel.storage.sql.datasets import SqlDatasetStore
from keel.storage.sql.engine import Database
from keel.storage.sql.evals import SqlEvalStore
from keel.storage.sql.gateway import SqlGatewayStore
from keel.storage.sql.migrate import migrate as apply_migrations
from keel.storage.sql.projects import SqlProjectStore
from keel.storage.sql.prompts import SqlPromptStore
from keel.storage.sql.spans import SqlSpanStore


class SqlStore(Store):
    """All areas on one SQL database."""

    def __init__(
        self, url: str, *, clock: Clock | None = None, migrate: bool = True, pool_size: int = 10
    ) -> None:
        self.url = url
        self.clock = clock or SystemClock()
        self.db = Database(url, pool_size=pool_size)
        self.backend = "sqlite" if self.db.is_sqlite else "postgres"
        if migrate:
            apply_migrations(self.db)
        self.projects = SqlProjectStore(self.db, self.clock)
        self.spans = SqlSpanStore(self.db)
        self.prompts = SqlPromptStore(self.db, self.clock)
        self.datasets = SqlDatasetStore(self.db, self.clock)
        self.gateway = SqlGatewayStore(self.db)
        self.evals = SqlEvalStore(self.db, self.clock)

    def ping(self) -> None:
        """Run a trivial query; raises StoreError when unreachable."""
        with self.db.read() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.db.dispose()
