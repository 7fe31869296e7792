"""Contract for eval runs, their per-row results and the model-output cache of the runner.

Results are appended as rows complete (``add_results``), so a killed run keeps everything it
finished and ``completed_keys`` tells a resumed run what not to send again. The output cache
maps a hash of the full model request to the response, so re-running a suite is cheap and
reproducible.
"""

from __future__ import annotations

from typing import Any, Protocol

from keel.core.evals import EvalRowResult, EvalRun


class EvalStore(Protocol):
    """Eval runs, row results and cached model outputs."""

    def add_run(self, run: EvalRun) -> EvalRun:
        """Store a new run; :class:`ConflictError` if the id exists."""
        ...

    def put_run(self, run: EvalRun) -> EvalRun:
        """Replace a run's record (status, verdict, summary change as it runs)."""
        ...

    def get_run(self, run_id: str) -> EvalRun:
        """By id; :class:`NotFoundError` if absent."""
        ...

    def list_runs(
        self,
        project_id: str,
        *,
        suite: str | None = None,
        prompt_name: str | None = None,
        prompt_version: int | None = None,
        dataset_name: str | None = None,
        dataset_version: int | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[EvalRun]:
        """Newest first, filtered."""
        ...

    def add_results(self, results: list[EvalRowResult]) -> None:
        """Append row results (one transaction); a (run, row, repeat) is stored once."""
        ...

    def list_results(self, run_id: str) -> list[EvalRowResult]:
        """A run's results in row order (row_index, repeat)."""
        ...

    def completed_keys(self, run_id: str) -> set[tuple[str, int]]:
        """The (row_id, repeat) pairs a run has stored results for."""
        ...

    def get_cached_outputs(self, keys: list[str]) -> dict[str, Any]:
        """Cached outputs by request hash (absent keys are left out)."""
        ...

    def put_cached_outputs(self, items: dict[str, Any]) -> None:
        """Store outputs by request hash (first write wins)."""
        ...
