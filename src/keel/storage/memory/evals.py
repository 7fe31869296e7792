"""In-memory eval runs, row results and the output cache."""

from __future__ import annotations

import copy
import threading
from typing import Any

from keel.core.clock import Clock
from keel.core.evals import EvalRowResult, EvalRun
from keel.errors import ConflictError, NotFoundError


class MemoryEvalStore:
    """Implements :class:`keel.storage.evals.EvalStore` in memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, EvalRun] = {}
        self._results: dict[str, dict[tuple[str, int], EvalRowResult]] = {}
        self._cache: dict[str, Any] = {}

    def add_run(self, run: EvalRun) -> EvalRun:
        with self._lock:
            if run.id in self._runs:
                raise ConflictError(f"eval run {run.id!r} already exists")
            self._runs[run.id] = run.model_copy(deep=True)
            self._results.setdefault(run.id, {})
        return run

    def put_run(self, run: EvalRun) -> EvalRun:
        with self._lock:
            if run.id not in self._runs:
                raise NotFoundError(f"eval run {run.id!r} not found")
            self._runs[run.id] = run.model_copy(deep=True)
        return run

    def get_run(self, run_id: str) -> EvalRun:
        r = self._runs.get(run_id)
        if r is None:
            raise NotFoundError(f"eval run {run_id!r} not found")
        return r.model_copy(deep=True)

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
        want = {
            "suite": suite,
            "prompt_name": prompt_name,
            "prompt_version": prompt_version,
            "dataset_name": dataset_name,
            "dataset_version": dataset_version,
            "status": status,
        }
        out = [
            r
            for r in self._runs.values()
            if r.project_id == project_id
            and all(v is None or getattr(r, k) == v for k, v in want.items())
        ]
        out.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return [r.model_copy(deep=True) for r in out[:limit]]

    def add_results(self, results: list[EvalRowResult]) -> None:
        with self._lock:
            for res in results:
                bucket = self._results.get(res.run_id)
                if bucket is None:
                    raise NotFoundError(f"eval run {res.run_id!r} not found")
                key = (res.row_id, res.repeat)
                if key not in bucket:
                    r = res.model_copy(deep=True)
                    if r.created_at is None:
                        r.created_at = self._clock.now()
                    bucket[key] = r

    def list_results(self, run_id: str) -> list[EvalRowResult]:
        if run_id not in self._runs:
            raise NotFoundError(f"eval run {run_id!r} not found")
        rows = sorted(self._results[run_id].values(), key=lambda r: (r.row_index, r.repeat))
        return [r.model_copy(deep=True) for r in rows]

    def completed_keys(self, run_id: str) -> set[tuple[str, int]]:
        return set(self._results.get(run_id, {}))

    def get_cached_outputs(self, keys: list[str]) -> dict[str, Any]:
        return {k: copy.deepcopy(self._cache[k]) for k in keys if k in self._cache}

    def put_cached_outputs(self, items: dict[str, Any]) -> None:
        with self._lock:
            for k, v in items.items():
                self._cache.setdefault(k, copy.deepcopy(v))
