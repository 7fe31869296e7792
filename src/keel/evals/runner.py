"""The eval runner: every row (× repeat) through a target, then through the evaluators.

Built for CI on real providers:

* async with bounded concurrency, and a token-bucket rate limit per provider;
* retries with exponential backoff and jitter for retryable provider errors (honouring
  ``retry_after``), per-row timeouts, and per-row failure isolation: a row whose target fails
  is stored with its error and the run goes on;
* a provider outage (every attempt of ``outage_after`` consecutive rows failed retryably and
  nothing succeeded in between) aborts the run with :class:`UnavailableError` (CLI exit 3);
* a cache of model outputs keyed by a hash of the full request (and the repeat index), so
  re-runs are cheap and reproducible;
* results persisted as rows complete (group commits from one writer task): a run killed at any
  point resumes from its stored rows and re-sends none of them;
* a live progress bar with pass rate, cost and throughput.

The runner knows nothing about prompts or providers: a :class:`Target` turns a row into a
request and a request into a :class:`TargetOutput` (see :mod:`keel.evals.targets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from keel.core.datasets import Row
from keel.core.evals import EvalRowResult, Score
from keel.core.hashing import content_hash
from keel.errors import (
    InvalidInputError,
    KeelError,
    ProviderError,
    RateLimitedError,
    UnavailableError,
)
from keel.evals.base import Evaluator
from keel.storage.evals import EvalStore


@dataclass
class TargetOutput:
    """What a target answered for one row."""

    output: Any
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    messages: list[dict[str, Any]] | None = None
    trace: list[Any] | None = None
    trace_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_cache(self) -> dict[str, Any]:
        """The cacheable part (no trace objects)."""
        return {
            "output": self.output,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> TargetOutput:
        """Rebuild from :meth:`to_cache`."""
        return cls(
            output=data.get("output"),
            cost_usd=data.get("cost_usd"),
            input_tokens=data.get("input_tokens"),
            output_tokens=data.get("output_tokens"),
            latency_ms=data.get("latency_ms"),
        )


class Target(Protocol):
    """Turns a row into a request and a request into an output."""

    name: str
    provider_key: str  # which rate limit applies ("fake", "openai", "python" ...)
    cacheable: bool

    def prepare(self, row: Row, repeat: int) -> dict[str, Any]:
        """The full request for this row (hashed as the cache key); raise InvalidInputError."""
        ...

    async def call(self, row: Row, request: dict[str, Any]) -> TargetOutput:
        """Send it; raise ProviderError (retryable or not) on failure."""
        ...


@dataclass
class NamedEvaluator:
    """An evaluator with the name it reports under and how its inputs map from a row."""

    evaluator: Evaluator
    alias: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Report name."""
        return self.alias or self.evaluator.name


class RateLimiter:
    """A token bucket: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a token."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass
class RunProgress:
    """Live counters (for the progress bar and the final summary)."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    errors: int = 0
    cached: int = 0
    sent: int = 0
    cost_usd: float = 0.0
    passed_scores: int = 0
    scored: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def pass_rate(self) -> float | None:
        """Share of scores that passed so far."""
        return self.passed_scores / self.scored if self.scored else None


@dataclass
class RunnerOptions:
    """Knobs of one run (from the suite's ``run`` section and flags)."""

    concurrency: int = 8
    repeat: int = 1
    retries: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 120.0
    rate_limits: dict[str, float] = field(default_factory=dict)
    cache: bool = True
    max_cost_usd: float | None = None
    evaluator_threads: int = 0
    outage_after: int = 8
    flush_every: int = 256
    flush_interval_s: float = 0.05
    seed: int = 0


def row_inputs(
    row: Row, out: TargetOutput | None, mapping: dict[str, str] | None = None
) -> dict[str, Any]:
    """Evaluator inputs from a row and the target's output.

    Defaults: ``response`` = the output, ``query`` = the input text (or its ``query`` /
    ``question`` / ``input`` field), ``context``, ``expected_output``, ``metadata``,
    ``messages``, ``trace``, latency, cost and tokens. ``mapping`` overrides a name with a
    source path (``output``, ``input``, ``input.x``, ``expected_output``, ``context``,
    ``metadata.x``, ``trace``).
    """
    inp = row.input
    query: Any = None
    if isinstance(inp, str):
        query = inp
    elif isinstance(inp, dict):
        for k in ("query", "question", "input", "prompt", "message"):
            if isinstance(inp.get(k), str):
                query = inp[k]
                break
    elif isinstance(inp, list):  # messages
        for m in reversed(inp):
            if (
                isinstance(m, dict)
                and m.get("role") == "user"
                and isinstance(m.get("content"), str)
            ):
                query = m["content"]
                break
    values: dict[str, Any] = {
        "query": query,
        "response": out.output if out else None,
        "context": list(row.context) or None,
        "expected_output": row.expected_output,
        "metadata": row.metadata or None,
        "messages": out.messages if out else None,
        "trace": out.trace if out else None,
        "latency_ms": out.latency_ms if out else None,
        "cost_usd": out.cost_usd if out else None,
        "input_tokens": out.input_tokens if out else None,
        "output_tokens": out.output_tokens if out else None,
    }
    if isinstance(inp, dict) and isinstance(inp.get("context"), list) and not row.context:
        values["context"] = inp["context"]
    for name, src in (mapping or {}).items():
        values[name] = resolve_source(src, row, out)
    return {k: v for k, v in values.items() if v is not None}


def resolve_source(src: str, row: Row, out: TargetOutput | None) -> Any:
    """Read ``output``, ``input``, ``input.a.b``, ``expected_output``, ``metadata.x`` ..."""
    head, _, rest = src.partition(".")
    base: Any
    if head == "output":
        base = out.output if out else None
    elif head == "trace":
        base = out.trace if out else None
    elif head in ("input", "expected_output", "context", "metadata", "tags", "split"):
        base = getattr(row, head)
    else:
        raise InvalidInputError(
            f"unknown input source {src!r}",
            hint="use output, input[.x], expected_output[.x], context, metadata[.x], trace",
        )
    for part in [p for p in rest.split(".") if p]:
        if isinstance(base, dict):
            base = base.get(part)
        elif isinstance(base, list) and part.isdigit() and int(part) < len(base):
            base = base[int(part)]
        else:
            return None
    return base


def _score_one(ev: NamedEvaluator, inputs: dict[str, Any], row_id: str) -> Score:
    e = ev.evaluator
    allowed = e.required_inputs | e.optional_inputs
    try:
        s = e.evaluate(**{k: v for k, v in inputs.items() if k in allowed})
    except InvalidInputError as err:
        s = Score(
            evaluator=e.name,
            evaluator_version=e.version,
            threshold=e.threshold,
            error=f"InvalidInputError: {err.message}",
        )
    except Exception as err:  # an evaluator must never abort the run
        s = Score(
            evaluator=e.name,
            evaluator_version=e.version,
            threshold=e.threshold,
            error=f"{type(err).__name__}: {err}",
        )
    if ev.alias:
        s.evaluator = ev.alias
    s.target_kind = "row"
    s.target_id = row_id
    return s


def score_row(
    evaluators: Sequence[NamedEvaluator], row: Row, out: TargetOutput | None, row_id: str
) -> list[Score]:
    """Every evaluator on one row (a target failure gives error scores)."""
    if out is None:
        return [
            Score(
                evaluator=ev.name,
                evaluator_version=ev.evaluator.version,
                threshold=ev.evaluator.threshold,
                error="target failed on this row",
                target_kind="row",
                target_id=row_id,
            )
            for ev in evaluators
        ]
    scores = []
    for ev in evaluators:
        try:
            inputs = row_inputs(row, out, ev.inputs)
        except InvalidInputError as err:
            scores.append(
                Score(
                    evaluator=ev.name,
                    evaluator_version=ev.evaluator.version,
                    error=err.message,
                    target_kind="row",
                    target_id=row_id,
                )
            )
            continue
        scores.append(_score_one(ev, inputs, row_id))
    return scores


def _retryable(e: BaseException) -> tuple[bool, float | None]:
    if isinstance(e, ProviderError):
        return bool(getattr(e, "retryable", False)), getattr(e, "retry_after", None)
    if isinstance(e, RateLimitedError | UnavailableError):
        return True, e.retry_after
    if isinstance(e, asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True, None
    return False, None


class EvalRunner:
    """Runs rows through a target and evaluators, persisting results as they complete."""

    def __init__(
        self,
        store: EvalStore,
        target: Target,
        evaluators: Sequence[NamedEvaluator],
        options: RunnerOptions | None = None,
        *,
        on_progress: Callable[[RunProgress], None] | None = None,
    ) -> None:
        self.store = store
        self.target = target
        self.evaluators = list(evaluators)
        self.opt = options or RunnerOptions()
        self.on_progress = on_progress
        self.progress = RunProgress()
        self._limiters = {k: RateLimiter(v) for k, v in self.opt.rate_limits.items() if v > 0}
        self._rand = random.Random(self.opt.seed)
        self._pending: list[EvalRowResult] = []
        self._pending_cache: dict[str, Any] = {}
        self._flush_event: asyncio.Event | None = None
        self._consecutive_outage = 0
        self._outage: BaseException | None = None
        self._stop_cost = False
        self._closing = False
        self._prepared: dict[tuple[str, int], tuple[dict[str, Any], str | None]] = {}
        self._cache_hits: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _limiter(self) -> RateLimiter | None:
        key = self.target.provider_key
        return self._limiters.get(key) or self._limiters.get("*")

    async def run(self, run_id: str, rows: Sequence[Row]) -> RunProgress:
        """Run every (row, repeat) not yet stored for ``run_id``; returns the counters.

        Raises :class:`UnavailableError` when the provider is down (results so far are kept).
        """
        done = await asyncio.to_thread(self.store.completed_keys, run_id)
        work: list[tuple[int, Row, int]] = []
        for idx, row in enumerate(rows):
            for rep in range(self.opt.repeat):
                if (row.id, rep) in done:
                    self.progress.skipped += 1
                else:
                    work.append((idx, row, rep))
        self.progress.total = len(work)
        await self._prefetch_cache(work)
        self._flush_event = asyncio.Event()
        if self.opt.evaluator_threads:
            self._pool = ThreadPoolExecutor(
                self.opt.evaluator_threads, thread_name_prefix="keel-eval"
            )
        writer = asyncio.create_task(self._writer(run_id))
        sem = asyncio.Semaphore(self.opt.concurrency)
        queue = iter(work)

        async def worker() -> None:
            for idx, row, rep in queue:
                if self._outage is not None or self._stop_cost:
                    return
                async with sem:
                    await self._one(run_id, idx, row, rep)

        workers = [
            asyncio.create_task(worker()) for _ in range(min(self.opt.concurrency, len(work)) or 1)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            # Let the writer finish its current flush (never cancel it mid-write: a batch
            # taken off the queue would be lost), then flush what is left.
            self._closing = True
            self._flush_event.set()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._flush(run_id)
            if self._pool:
                self._pool.shutdown(wait=False)
            aclose = getattr(self.target, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if self._outage is not None:
            e = self._outage
            raise UnavailableError(
                f"the target looks down: {self._consecutive_outage} rows in a row failed "
                f"after retries ({type(e).__name__}: {e})",
                hint="stored rows are kept: fix the provider and rerun with --resume RUN_ID",
            )
        return self.progress

    def _prepare(self, row: Row, rep: int) -> tuple[dict[str, Any], str | None]:
        request = self.target.prepare(row, rep)
        req_hash = (
            content_hash({"request": request, "repeat": rep}) if self.target.cacheable else None
        )
        return request, req_hash

    async def _prefetch_cache(self, work: list[tuple[int, Row, int]]) -> None:
        """Prepare every request and look the cache up in bulk (one query per 500 rows)."""
        if not (self.opt.cache and self.target.cacheable):
            return
        for i in range(0, len(work), 500):
            keys = []
            for _, row, rep in work[i : i + 500]:
                try:
                    prepared = self._prepare(row, rep)
                except Exception:
                    continue  # the row records its error when it runs
                self._prepared[(row.id, rep)] = prepared
                if prepared[1]:
                    keys.append(prepared[1])
            if keys:
                self._cache_hits.update(await asyncio.to_thread(self.store.get_cached_outputs, keys))

    async def _one(self, run_id: str, idx: int, row: Row, rep: int) -> None:
        t0 = time.perf_counter()
        out: TargetOutput | None = None
        error: str | None = None
        cached = False
        req_hash: str | None = None
        try:
            prepared = self._prepared.pop((row.id, rep), None)
            request, req_hash = prepared if prepared is not None else self._prepare(row, rep)
            if req_hash and self.opt.cache:
                hit = self._pending_cache.get(req_hash) or self._cache_hits.get(req_hash)
                if hit is not None:
                    out = TargetOutput.from_cache(hit)
                    cached = True
            if out is None:
                out = await self._call_with_retries(row, request)
                if req_hash and self.opt.cache:
                    self._pending_cache[req_hash] = out.to_cache()
        except KeelError as e:
            error = f"{type(e).__name__}: {e.message}"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        if self._outage is not None and out is None:
            return  # the run aborts; this row is not stored, a resume sends it again
        if out is not None and out.latency_ms is None:
            out.latency_ms = (time.perf_counter() - t0) * 1000
        if self._pool is not None:
            loop = asyncio.get_running_loop()
            scores = await loop.run_in_executor(
                self._pool, score_row, self.evaluators, row, out, row.id
            )
        else:
            scores = score_row(self.evaluators, row, out, row.id)
        res = EvalRowResult(
            run_id=run_id,
            row_id=row.id,
            repeat=rep,
            row_index=idx,
            input=row.input,
            expected_output=row.expected_output,
            output=out.output if out else None,
            error=error,
            scores=scores,
            latency_ms=out.latency_ms if out else None,
            cost_usd=(out.cost_usd if out and not cached else 0.0 if cached else None),
            input_tokens=out.input_tokens if out else None,
            output_tokens=out.output_tokens if out else None,
            cached=cached,
            request_hash=req_hash,
            trace_id=out.trace_id if out else None,
        )
        self._pending.append(res)
        p = self.progress
        p.cached += int(cached)
        p.errors += int(error is not None)
        if out is not None and not cached and out.cost_usd:
            p.cost_usd += out.cost_usd
            if self.opt.max_cost_usd is not None and p.cost_usd >= self.opt.max_cost_usd:
                self._stop_cost = True
        for s in scores:
            if s.value is not None:
                p.scored += 1
                p.passed_scores += int(bool(s.passed))
        if len(self._pending) >= self.opt.flush_every and self._flush_event:
            self._flush_event.set()

    async def _call_with_retries(self, row: Row, request: dict[str, Any]) -> TargetOutput:
        attempt = 0
        limiter = self._limiter()
        while True:
            if limiter:
                await limiter.acquire()
            self.progress.sent += 1
            t0 = time.perf_counter()
            try:
                out = await asyncio.wait_for(self.target.call(row, request), self.opt.timeout_s)
            except Exception as e:
                retry, after = _retryable(e)
                if retry and attempt < self.opt.retries and self._outage is None:
                    attempt += 1
                    delay = after if after is not None else self.opt.backoff_s * 2 ** (attempt - 1)
                    delay *= 0.5 + self._rand.random()  # jitter
                    await asyncio.sleep(min(delay, 60.0))
                    continue
                if retry:
                    self._consecutive_outage += 1
                    if self._consecutive_outage >= self.opt.outage_after and self._outage is None:
                        self._outage = e
                raise
            self._consecutive_outage = 0
            if out.latency_ms is None:
                out.latency_ms = (time.perf_counter() - t0) * 1000
            return out

    async def _writer(self, run_id: str) -> None:
        assert self._flush_event is not None
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flush_event.wait(), self.opt.flush_interval_s)
            self._flush_event.clear()
            await self._flush(run_id)

    async def _flush(self, run_id: str) -> None:
        if not self._pending and not self._pending_cache:
            return
        batch, self._pending = self._pending, []
        cache, self._pending_cache = self._pending_cache, {}
        # Cache first: a row stored as done must find its output cached on a re-run.
        if cache:
            await asyncio.to_thread(self.store.put_cached_outputs, cache)
        if batch:
            await asyncio.to_thread(self.store.add_results, batch)
        self.progress.done += len(batch)
        if self.on_progress:
            self.on_progress(self.progress)
