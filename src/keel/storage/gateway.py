"""Contract for the gateway's durable state: the spend ledger behind key budgets.

The rate limiter keeps its hot counters in process (or in Redis); this ledger is what makes a
day's or month's spend survive a restart. Rows are one per (API key, UTC day); amounts are
integer micro-dollars so repeated additions never drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

MICRO_USD = 1_000_000


@dataclass(frozen=True, slots=True)
class SpendDelta:
    """Spend to add to one key's ledger row for one UTC day."""

    key_id: str
    project_id: str
    day: date
    cost_micro_usd: int
    tokens: int = 0
    requests: int = 0


@dataclass(frozen=True, slots=True)
class SpendTotals:
    """Summed spend over a range of days."""

    cost_micro_usd: int = 0
    tokens: int = 0
    requests: int = 0

    @property
    def cost_usd(self) -> float:
        """The cost in US dollars."""
        return self.cost_micro_usd / MICRO_USD


class GatewayStore(Protocol):
    """The spend ledger."""

    def add_spend(self, deltas: list[SpendDelta]) -> None:
        """Add each delta to its (key, day) row, creating the row if needed; atomic per call."""
        ...

    def get_spend(self, key_id: str, start: date, end: date) -> SpendTotals:
        """Totals of one key over the days ``start`` .. ``end`` (both inclusive)."""
        ...

    def list_spend(
        self, project_id: str, start: date, end: date
    ) -> list[tuple[str, date, SpendTotals]]:
        """``(key_id, day, totals)`` rows of one project in the range, by day then key."""
        ...
