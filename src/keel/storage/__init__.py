"""Storage: one contract (protocols per area) with in-memory, SQLite and Postgres backends.

``open_store(url)`` is the only entry point callers need::

    store = open_store("sqlite:///.keel/keel.db")   # or "memory://", "postgresql+psycopg://…"
    project = store.projects.add_project("demo")
"""

from __future__ import annotations

from keel.storage.base import Store
from keel.storage.factory import open_store

__all__ = ["Store", "open_store"]
