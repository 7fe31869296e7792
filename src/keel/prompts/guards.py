"""Label guards: the hook that decides whether a label may move.

Moving a *protected* label (``production`` by default) should need evidence, for example a
passed eval run of the target version. This module defines the hook only; the check that an
:class:`~keel.core.evals.EvalRun` passed lives with the evals and plugs in here.

A guard is any object with ``check(move, store)`` that returns None to allow the move and raises
a Keel error (usually :class:`~keel.errors.GateFailedError` or
:class:`~keel.errors.PermissionDeniedError`) to refuse it. Guards come from two places:

- :func:`register_label_guard` (in-process, e.g. from an app's start-up code or a test), and
- the ``keel.label_guards`` entry-point group: each entry point names a zero-argument factory
  (or a class) that returns a guard.

:func:`load_label_guards` returns both; the registry runs every guard on every move.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("keel.prompts")

ENTRY_POINT_GROUP = "keel.label_guards"


@dataclass(frozen=True)
class LabelMove:
    """A requested label move, as a guard sees it."""

    project_id: str
    prompt_name: str
    label: str
    from_version: int | None
    to_version: int
    content_hash: str
    protected: bool
    actor: str
    reason: str | None = None
    rollback: bool = False


@runtime_checkable
class LabelGuard(Protocol):
    """Allows (returns) or refuses (raises) a label move."""

    def check(self, move: LabelMove, store: Any) -> None:
        """Raise a Keel error to refuse ``move``; ``store`` is the :class:`Store`."""
        ...


class AllowAll:
    """The default guard: every move is allowed."""

    def check(self, move: LabelMove, store: Any) -> None:
        """Allow."""
        return None


_lock = threading.Lock()
_registered: list[LabelGuard] = []


def register_label_guard(guard: LabelGuard) -> None:
    """Add a guard for every registry created after this call in this process."""
    if not isinstance(guard, LabelGuard):
        raise TypeError("a label guard needs a check(move, store) method")
    with _lock:
        _registered.append(guard)


def unregister_label_guard(guard: LabelGuard) -> None:
    """Remove a guard added with :func:`register_label_guard` (tests use this)."""
    with _lock:
        if guard in _registered:
            _registered.remove(guard)


def load_label_guards(*, entry_points: bool = True) -> list[LabelGuard]:
    """Registered guards plus those from the ``keel.label_guards`` entry points."""
    with _lock:
        guards = list(_registered)
    if entry_points:
        from importlib.metadata import entry_points as eps

        for ep in eps(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                guard = obj() if isinstance(obj, type) or not hasattr(obj, "check") else obj
                guards.append(guard)
            except Exception:
                log.exception("could not load label guard %s", ep.name)
                raise
    return guards or [AllowAll()]
