"""The ``Store`` facade: one object holding each area's store, whatever the backend."""

from __future__ import annotations

from typing import Any

from keel.core.clock import Clock
from keel.storage.datasets import DatasetStore
from keel.storage.evals import EvalStore
from keel.storage.gateway import GatewayStore
from keel.storage.projects import ProjectStore
from keel.storage.prompts import PromptStore
from keel.storage.spans import SpanStore


class Store:
    """All of Keel's persistent record, grouped by area.

    Each attribute implements that area's protocol (see ``keel.storage.<area>``). Backends
    construct it; callers never depend on which backend they have.
    """

    backend: str
    url: str
    clock: Clock
    projects: ProjectStore
    spans: SpanStore
    prompts: PromptStore
    datasets: DatasetStore
    evals: EvalStore
    gateway: GatewayStore
    releases: Any

    def ping(self) -> None:
        """Raise :class:`keel.errors.StoreError` if the store cannot be reached."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and background writers."""
        raise NotImplementedError
