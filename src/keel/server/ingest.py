"""The span ingest writer: one thread that group-commits spans, and the trace-completed signal.

Every span Keel stores goes through :class:`IngestWriter`, whether it came over OTLP or from
inside the process (the gateway writes one span per request). The server creates one at
start and puts it on the app context::

    writer = ctx.extras["ingest"]                  # an IngestWriter
    fut = writer.submit(project_id, [span, ...])   # never blocks; a concurrent Future
    await asyncio.wrap_future(fut)                 # optional: wait until committed
    writer.write(project_id, spans)                # blocking form, returns spans stored

Guarantees:

* **Durable when acknowledged.** A submit's future resolves only after the transaction holding
  its spans committed (SQLite WAL: survives ``kill -9``). The OTLP route answers 200 only then.
* **Group commit.** The writer thread drains whatever is queued (up to
  ``tracing.batch_max_spans``) into one transaction, so many small requests share one commit.
* **Bounded, never silent.** At most ``tracing.queue_max_spans`` spans wait in memory, of
  which at most :data:`LOCAL_MAX_SPANS` built in process; beyond that
  :meth:`IngestWriter.submit` raises :class:`UnavailableError` (503 + ``Retry-After``)
  instead of queueing or dropping. A failed commit fails every future in its batch.
* **Idempotent.** Stores ignore a span already stored (same project, trace and span id), so
  clients may re-send after an ambiguous failure.

:class:`TraceEvents` (``ctx.extras["trace_events"]``) announces :class:`TraceCompleted` once
per trace, when its root span was stored or after ``tracing.trace_idle_s`` without new spans.
Online evaluators subscribe to it; callbacks run on a dispatcher thread (or, for coroutine
functions, on the event loop they subscribed from) and can never slow ingest down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.core.spans import LlmCall, Span
from keel.errors import KeelError, StoreError, UnavailableError
from keel.otlp.dialects import to_llm_call
from keel.storage.base import Store
from keel.storage.spans import SpanRecord

log = logging.getLogger("keel.ingest")

# In-process spans (the gateway's) wait as built Span + LlmCall records, ~8 KiB of Python heap
# each (tracemalloc, one small chat request), where OTLP bodies wait as compact bytes. Their own,
# smaller bound (~160 MiB) keeps a writer that falls behind (a large SQLite file, a slow disk)
# from holding up to queue_max_spans of them (~1.6 GB at 200,000). Past it, enqueue() waits
# (``wait_s``) or raises UnavailableError; the gateway's sink waits on its worker thread.
LOCAL_MAX_SPANS = 20_000


def _load_pricer() -> Callable[[LlmCall], LlmCall] | None:
    try:
        mod = importlib.import_module("keel.otlp.cost")
    except ImportError:
        return None
    fn = getattr(mod, "price_llm_call", None)
    if not callable(fn):
        return None
    # understand() prices the LlmCall it has just built: fill it in place rather than copy it
    return functools.partial(fn, in_place=True)


def understand(
    span: Span, pricer: Callable[[LlmCall], LlmCall] | None = None, *, index_only: bool = False
) -> LlmCall | None:
    """The priced ``LlmCall`` view of a span, or None; never raises (a bad span stays raw).

    ``index_only`` (the ingest path) skips messages, tool calls and documents: only the scalar
    fields are stored, and the read path rebuilds the full view."""
    try:
        llm = to_llm_call(span, index_only=index_only)
    except Exception:
        log.debug("dialect normalization failed for span %s", span.span_id, exc_info=True)
        return None
    if llm is not None and pricer is not None and llm.cost_usd is None:
        try:
            llm = pricer(llm)
        except Exception:
            log.debug("pricing failed for span %s", span.span_id, exc_info=True)
    return llm


# ----------------------------------------------------------------------------- trace events


@dataclass(frozen=True)
class TraceCompleted:
    """A trace is (probably) complete: its root span is stored, or it went quiet."""

    project_id: str
    trace_id: str
    reason: Literal["root_ended", "idle"]
    spans_seen: int


Subscriber = Callable[[TraceCompleted], Any]


class TraceEvents:
    """In-process pub/sub of :class:`TraceCompleted`, fed by the ingest writer after commits."""

    def __init__(
        self,
        idle_s: float = 30.0,
        *,
        max_tracked: int = 20_000,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._max_tracked = max_tracked
        # Bounded in spans, not in batches: one committed batch can hold thousands of spans,
        # and a dispatcher starved of the GIL must not let them pile up without limit.
        self._max_pending = max_pending
        self._inbox: queue.Queue[list[tuple[str, str, bool]] | None] = queue.Queue()
        self._inbox_spans = 0
        self._inbox_lock = threading.Lock()
        self._subs: list[tuple[Subscriber, asyncio.AbstractEventLoop | None]] = []
        self._subs_lock = threading.Lock()
        self._open: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.emitted = 0

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every completed trace; returns an unsubscribe function.

        A coroutine function is scheduled on the running event loop it was subscribed from.
        """
        loop = None
        if inspect.iscoroutinefunction(callback):
            loop = asyncio.get_running_loop()
        entry = (callback, loop)
        with self._subs_lock:
            self._subs.append(entry)

        def unsubscribe() -> None:
            with self._subs_lock:
                if entry in self._subs:
                    self._subs.remove(entry)

        return unsubscribe

    def start(self) -> None:
        """Start the dispatcher thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-trace-events", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dispatcher thread (pending idle traces are not announced)."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._inbox.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None

    @property
    def pending_spans(self) -> int:
        """Spans noted but not yet looked at by the dispatcher (at most ``max_pending``)."""
        return self._inbox_spans

    def observe(self, records: Sequence[SpanRecord]) -> None:
        """Note committed spans (called by the writer; never blocks; drops past the bound)."""
        n = len(records)
        with self._inbox_lock:
            if self._inbox_spans + n > self._max_pending:
                self.dropped += n
                return
            self._inbox_spans += n
        items = [(r.span.project_id, r.span.trace_id, not r.span.parent_span_id) for r in records]
        self._inbox.put_nowait(items)

    def _run(self) -> None:
        tick = min(1.0, self.idle_s / 4)
        while True:
            try:
                items = self._inbox.get(timeout=tick)
            except queue.Empty:
                items = []
            if items is None:
                return
            if items:
                with self._inbox_lock:
                    self._inbox_spans -= len(items)
            now = self._clock()
            for project_id, trace_id, is_root in items:
                key = (project_id, trace_id)
                if key in self._done:
                    continue
                st = self._open.get(key)
                if st is None:
                    st = self._open[key] = [now, 0.0]
                else:
                    self._open.move_to_end(key)
                st[0] = now
                st[1] += 1
                if is_root:
                    self._finish(key, "root_ended")
            while len(self._open) > self._max_tracked:
                self._finish(next(iter(self._open)), "idle")
            cutoff = now - self.idle_s
            while self._open:
                key, st = next(iter(self._open.items()))
                if st[0] > cutoff:
                    break
                self._finish(key, "idle")

    def _finish(self, key: tuple[str, str], reason: Literal["root_ended", "idle"]) -> None:
        st = self._open.pop(key, None)
        self._done[key] = None
        # Remember recently finished traces (so a late span does not announce them twice), but
        # only a bounded number: one-span traces (every gateway request) would grow this forever.
        while len(self._done) > self._max_tracked:
            self._done.popitem(last=False)
        event = TraceCompleted(key[0], key[1], reason, int(st[1]) if st else 0)
        self.emitted += 1
        with self._subs_lock:
            subs = list(self._subs)
        for cb, loop in subs:
            try:
                if loop is not None:
                    loop.call_soon_threadsafe(_spawn, cb, event)
                else:
                    cb(event)
            except Exception:
                log.exception("trace-completed subscriber %r failed", cb)


def _spawn(cb: Subscriber, event: TraceCompleted) -> None:
    task = asyncio.ensure_future(cb(event))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Future[Any]] = set()


# ----------------------------------------------------------------------------- writer


def _local_cost(batch: list[_Item]) -> int:
    return sum(it.cost for it in batch if it.local and it.decode is None)


@dataclass
class _Item:
    records: list[SpanRecord]
    future: concurrent.futures.Future[Any]
    local: bool = True
    # A raw request body is decoded and understood on the writer thread (see submit_decode):
    # ``decode`` returns its DecodedBatch, which becomes the future's result once committed.
    decode: Callable[[], Any] | None = None
    batch: Any = None
    cost: int = 0  # what this item counts in ``_pending`` (spans, or an estimate for bodies)


class IngestWriter:
    """The single writer of spans (see the module docstring for its guarantees)."""

    def __init__(
        self,
        store: Store,
        *,
        queue_max_spans: int = 200_000,
        batch_max_spans: int = 5_000,
        local_max_spans: int = LOCAL_MAX_SPANS,
        events: TraceEvents | None = None,
        pricer: Callable[[LlmCall], LlmCall] | Literal["auto"] | None = "auto",
    ) -> None:
        self.store = store
        self.queue_max_spans = queue_max_spans
        self.local_max_spans = min(local_max_spans, queue_max_spans)
        self.batch_max_spans = batch_max_spans
        self.events = events
        self.pricer = _load_pricer() if pricer == "auto" else pricer
        self._items: deque[_Item] = deque()
        self._ready: list[_Item] = []  # decoded on the writer thread, not yet committed
        self._pending = 0
        self._local_pending = 0  # of which in-process spans (already built Span objects)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # counters, for /metrics and the bench
        self.spans_committed = 0
        self.spans_new = 0
        self.batches = 0
        self.rejected_full = 0
        self.failed_batches = 0
        # Called (on the writer thread) with the records of in-process submits after they are
        # committed; the OTLP route uses it to forward the gateway's spans too.
        self.on_local_commit: Callable[[list[SpanRecord]], None] | None = None
        self._started = time.monotonic()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="keel-ingest", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:  # anything left (writer died or timed out) fails loudly
            left = [*self._ready, *self._items]
            self._ready = []
            self._items.clear()
            for item in left:
                if not item.future.done():
                    item.future.set_exception(UnavailableError("the ingest writer stopped"))
            self._pending = 0
            self._local_pending = 0

    @property
    def pending_spans(self) -> int:
        """Spans accepted but not yet committed."""
        return self._pending

    # ---------------------------------------------------------------- submitting

    def prepare(self, project_id: str | None, spans: Sequence[Span]) -> list[SpanRecord]:
        """Records for ``spans`` (LLM view extracted and priced); sets ``project_id`` if given."""
        pricer = self.pricer
        out = []
        for s in spans:
            if project_id is not None and s.project_id != project_id:
                s = s.model_copy(update={"project_id": project_id})
            out.append(SpanRecord(s, understand(s, pricer, index_only=True)))
        return out

    def submit(
        self, project_id: str | None, spans: Sequence[Span]
    ) -> concurrent.futures.Future[int]:
        """Queue spans for the next commit; the future yields how many spans were committed.

        Raises :class:`UnavailableError` (retryable) when the queue is full or the writer is
        not running. Safe to call from any thread.
        """
        return self.enqueue(self.prepare(project_id, spans))

    def enqueue(
        self, records: list[SpanRecord], *, local: bool = True, wait_s: float = 0.0
    ) -> concurrent.futures.Future[int]:
        """Queue already-prepared records (see :meth:`prepare`).

        ``local=False`` marks spans that arrived over OTLP (forwarded as received, not again).
        In-process spans count toward ``local_max_spans``; past it, wait up to ``wait_s``
        seconds for room (a blocking caller off the event loop, such as the gateway's span
        sink), then raise :class:`UnavailableError`.
        """
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        if not records:
            fut.set_result(0)
            return fut
        n = len(records)
        self._admit(_Item(records, fut, local, cost=n), wait_s)
        return fut

    def submit_decode(
        self, decode: Callable[[], Any], *, estimate: int
    ) -> concurrent.futures.Future[Any]:
        """Queue a request body: ``decode()`` (returning a ``DecodedBatch``) runs on the writer
        thread, its spans are understood and committed with the next group, and the future
        yields the batch once they are durable (or the decode error, for that body alone).

        One thread doing decode, understanding and writing keeps the GIL with the work: handing
        spans from request threads to the writer cost more than the work itself (the writer
        waited for the GIL after every SQLite step). ``estimate`` (spans) counts toward the
        queue bound until the body is committed.
        """
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        n = max(1, estimate)
        self._admit(_Item([], fut, False, decode=decode, cost=n))
        return fut

    def _admit(self, item: _Item, wait_s: float = 0.0) -> None:
        """Queue ``item`` unless the writer is down or the queue bound would be crossed."""
        n = item.cost
        local = item.local and item.decode is None
        with self._cond:
            if local and wait_s > 0:
                deadline = time.monotonic() + wait_s
                while (
                    self._local_pending
                    and self._local_pending + n > self.local_max_spans
                    and self._thread is not None
                    and not self._stopping
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if self._thread is None or self._stopping:
                raise UnavailableError("the ingest writer is not running", retry_after=5)
            if self._pending + n > self.queue_max_spans and self._pending > 0:
                self.rejected_full += n
                raise UnavailableError(
                    f"ingest queue is full ({self._pending} spans waiting)",
                    retry_after=self._retry_after(),
                    hint="retry after the Retry-After delay; the server is writing as fast as it can",
                )
            if local and self._local_pending + n > self.local_max_spans and self._local_pending:
                self.rejected_full += n
                raise UnavailableError(
                    f"ingest queue holds {self._local_pending} in-process spans",
                    retry_after=self._retry_after(),
                )
            self._items.append(item)
            self._pending += n
            if local:
                self._local_pending += n
            self._cond.notify_all()  # the writer thread (sinks waiting for room share _cond)

    def write(self, project_id: str | None, spans: Sequence[Span], timeout: float = 60.0) -> int:
        """Submit and wait for the commit; returns how many spans were committed."""
        return self.submit(project_id, spans).result(timeout)

    def _retry_after(self) -> float:
        rate = max(self.spans_committed / max(time.monotonic() - self._started, 1e-3), 1000.0)
        return min(30.0, max(1.0, self._pending / rate))

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        self._started = time.monotonic()
        while True:
            with self._cond:
                while not self._items and not self._ready and not self._stopping:
                    self._cond.wait()
                if not self._items and not self._ready and self._stopping:
                    return
                # items prepared while the last commit waited for the write lock go first
                batch: list[_Item] = self._ready
                self._ready = []
                size = sum(it.cost for it in batch)
                while self._items and (
                    not batch or size + self._items[0].cost <= self.batch_max_spans
                ):
                    item = self._items.popleft()
                    batch.append(item)
                    size += item.cost
            batch = self._decode(batch)
            if batch:
                self._commit(batch, sum(it.cost for it in batch))
            # not kept alive by this frame while the thread waits for the next batch
            batch = []

    def _prepare_next(self) -> bool:
        """Decode and understand one queued body for the *next* commit; False when there is
        nothing to do (or the next batch is full).

        The store calls this while another process holds the database's write lock
        (``keel serve --workers N`` on one SQLite file): the writer prepares instead of
        sleeping, so its core stays busy while the other process writes.
        """
        with self._cond:
            if not self._items:
                return False
            ready = sum(it.cost for it in self._ready)
            if self._ready and ready + self._items[0].cost > self.batch_max_spans:
                return False
            item = self._items.popleft()
        self._ready.extend(self._decode([item]))
        return True

    def _decode(self, batch: list[_Item]) -> list[_Item]:
        """Decode and understand the raw bodies of ``batch``; a body that fails fails alone."""
        out: list[_Item] = []
        for it in batch:
            if it.decode is not None:
                try:
                    it.batch = it.decode()
                    it.records = self.prepare(None, it.batch.spans)
                except Exception as e:  # handed to the request that sent this body
                    with self._cond:
                        self._pending -= it.cost
                    it.future.set_exception(e)
                    continue
                it.decode = None
                n = len(it.records)
                if n != it.cost:  # the estimate becomes the real count
                    with self._cond:
                        self._pending += n - it.cost
                    it.cost = n
            out.append(it)
        return out

    def _commit(self, batch: list[_Item], size: int) -> None:
        records = batch[0].records if len(batch) == 1 else [r for it in batch for r in it.records]
        try:
            new = self.store.spans.add_spans(records, while_waiting=self._prepare_next)
        except Exception as e:
            if len(batch) > 1 and not isinstance(e, StoreError):
                # Not an outage: one request's spans may be poison. Commit items alone so
                # only the offending one fails.
                for it in batch:
                    self._commit([it], it.cost)
                return
            self.failed_batches += 1
            if isinstance(e, StoreError):
                err: KeelError = UnavailableError(
                    f"could not store spans: {e.message}", retry_after=5
                )
            else:
                log.exception("span batch of %d failed", size)
                msg = e.message if isinstance(e, KeelError) else type(e).__name__
                err = StoreError(f"could not store spans: {msg}")
            with self._cond:
                self._pending -= size
                self._local_pending -= _local_cost(batch)
            for it in batch:
                it.future.set_exception(err)
            return
        with self._cond:
            self._pending -= size
            freed = _local_cost(batch)
            self._local_pending -= freed
            if freed:
                self._cond.notify_all()  # a sink waiting for room (enqueue wait_s)
        self.spans_committed += size
        self.spans_new += new
        self.batches += 1
        for it in batch:
            it.future.set_result(it.batch if it.batch is not None else len(it.records))
        hook = self.on_local_commit
        if hook is not None:
            local = [r for it in batch if it.local for r in it.records]
            if local:
                try:
                    hook(local)
                except Exception:
                    log.exception("on_local_commit hook failed")
        if self.events is not None:
            try:
                self.events.observe(records)
            except Exception:
                log.exception("trace events failed")
