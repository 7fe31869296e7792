"""Time as an injectable dependency, so tests can pin it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Source of the current time."""

    def now(self) -> datetime:
        """Current UTC time."""
        ...

    def time_ns(self) -> int:
        """Current time in nanoseconds since the epoch."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    def time_ns(self) -> int:
        """Current time in nanoseconds since the epoch."""
        return time.time_ns()


class FixedClock:
    """A clock that only moves when told to; for deterministic tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        """The pinned time."""
        return self._now

    def time_ns(self) -> int:
        """The pinned time in nanoseconds."""
        return int(self._now.timestamp() * 1_000_000_000)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        from datetime import timedelta

        self._now = self._now + timedelta(seconds=seconds)


def utcnow() -> datetime:
    """Current UTC time (for defaults where no clock is injected)."""
    return datetime.now(UTC)
