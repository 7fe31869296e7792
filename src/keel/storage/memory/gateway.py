"""In-memory spend ledger."""

from __future__ import annotations

import threading
from datetime import date

from keel.storage.gateway import SpendDelta, SpendTotals


class MemoryGatewayStore:
    """Implements :class:`keel.storage.gateway.GatewayStore` in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (key_id, day) -> [project_id, cost_micro, tokens, requests]
        self._rows: dict[tuple[str, date], list[int | str]] = {}

    def add_spend(self, deltas: list[SpendDelta]) -> None:
        with self._lock:
            for d in deltas:
                row = self._rows.setdefault((d.key_id, d.day), [d.project_id, 0, 0, 0])
                row[1] = int(row[1]) + d.cost_micro_usd
                row[2] = int(row[2]) + d.tokens
                row[3] = int(row[3]) + d.requests

    def get_spend(self, key_id: str, start: date, end: date) -> SpendTotals:
        cost = tokens = requests = 0
        with self._lock:
            for (k, day), row in self._rows.items():
                if k == key_id and start <= day <= end:
                    cost += int(row[1])
                    tokens += int(row[2])
                    requests += int(row[3])
        return SpendTotals(cost, tokens, requests)

    def list_spend(
        self, project_id: str, start: date, end: date
    ) -> list[tuple[str, date, SpendTotals]]:
        with self._lock:
            out = [
                (k, day, SpendTotals(int(r[1]), int(r[2]), int(r[3])))
                for (k, day), r in self._rows.items()
                if r[0] == project_id and start <= day <= end
            ]
        return sorted(out, key=lambda x: (x[1], x[0]))
