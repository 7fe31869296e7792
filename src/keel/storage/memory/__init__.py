"""The in-memory backend: the reference implementation of every store contract.

Thread-safe (one lock per area); loses everything when the process ends. Used by tests and
by the SDK's offline mode.
"""

from __future__ import annotations

from keel.core.clock import Clock, SystemClock
from keel.storage.base import Store
from keel.storage.memory.datasets import MemoryDatasetStore
from keel.storage.memory.evals import MemoryEvalStore
from keel.storage.memory.gateway import MemoryGatewayStore
from keel.storage.memory.projects import MemoryProjectStore
from keel.storage.memory.prompts import MemoryPromptStore
from keel.storage.memory.spans import MemorySpanStore


class MemoryStore(Store):
    """All areas in memory."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.backend = "memory"
        self.url = "memory://"
        self.clock = clock or SystemClock()
        self.projects = MemoryProjectStore(self.clock)
        self.spans = MemorySpanStore()
        self.prompts = MemoryPromptStore(self.clock)
        self.datasets = MemoryDatasetStore(self.clock)
        self.gateway = MemoryGatewayStore()
        self.evals = MemoryEvalStore(self.clock)

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""
