"""The protected-label check: moving ``production`` to a version needs a passed eval run of it.

Plugged into the prompt registry through the ``keel.label_guards`` entry point
(:class:`PassedRunGuard`). Unprotected labels move freely. A rollback (moving a label back to
a version it pointed at before) is allowed without a new run, so an incident is never blocked
by CI; it is still audited by the registry.
"""

from __future__ import annotations

from typing import Any

from keel.errors import GateFailedError


class PassedRunGuard:
    """Refuse a move of a protected label to a version without a completed, passed eval run."""

    def __init__(self, *, suite: str | None = None) -> None:
        self.suite = suite

    def check(self, move: Any, store: Any) -> None:
        """Allow (return) or refuse (raise :class:`GateFailedError`)."""
        if not move.protected or move.rollback:
            return
        runs = store.evals.list_runs(
            move.project_id,
            prompt_name=move.prompt_name,
            prompt_version=move.to_version,
            suite=self.suite,
            status="completed",
            limit=200,
        )
        passed = [r for r in runs if r.verdict is not None and r.verdict.passed]
        if passed:
            return
        failed = [r for r in runs if r.verdict is not None and not r.verdict.passed]
        why = (
            f"its latest run {failed[0].id} failed the gate ({failed[0].verdict.summary})"
            if failed and failed[0].verdict
            else "it has no completed eval run"
        )
        raise GateFailedError(
            f"cannot move protected label {move.label!r} of {move.prompt_name!r} to version "
            f"{move.to_version}: {why}",
            hint=f"run `keel eval run SUITE.yaml --target prompt:{move.prompt_name}@{move.to_version}` "
            "and move the label once the gate passes",
            details={"prompt": move.prompt_name, "version": move.to_version, "label": move.label},
        )
