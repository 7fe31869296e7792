"""Change notifications: signed webhooks, delivered in the background with retries.

A prompt push or a label move calls :meth:`WebhookNotifier.notify`, which only puts the event
on a bounded queue and returns: delivery never blocks (or fails) the request that caused it.
A daemon thread POSTs each event to every configured URL, retrying with exponential backoff on
connection errors, 429 and 5xx.

Each request carries ``X-Keel-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 over ``"<t>.<raw body>"`` with the endpoint's secret; receivers check it with
:func:`verify_signature`, which also rejects stale timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.core.ids import new_id
from keel.errors import AuthenticationError

log = logging.getLogger("keel.prompts.webhooks")

SIGNATURE_HEADER = "X-Keel-Signature"
EVENT_HEADER = "X-Keel-Event"
DELIVERY_HEADER = "X-Keel-Delivery"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Raise :class:`AuthenticationError` unless ``header`` signs ``body`` recently."""
    if not header:
        raise AuthenticationError(f"missing {SIGNATURE_HEADER} header")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise AuthenticationError("malformed webhook signature")
    if abs((now if now is not None else time.time()) - ts) > tolerance_s:
        raise AuthenticationError("webhook signature timestamp is too old (possible replay)")
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise AuthenticationError("webhook signature does not match")


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where to send events, and the secret that signs them."""

    url: str
    secret: str
    events: tuple[str, ...] = ()  # empty: every event


@dataclass
class DeliveryStats:
    """Counters, for tests and metrics."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0


@dataclass
class WebhookNotifier:
    """Queues events and delivers them from a background thread."""

    endpoints: list[WebhookEndpoint]
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 5.0
    queue_size: int = 1000
    transport: Any = None  # an httpx transport, for tests
    clock: Callable[[], float] = time.time
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    _queue: queue.Queue[tuple[WebhookEndpoint, str, bytes, str] | None] = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.queue_size)

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        """Enqueue ``event`` for every endpoint that wants it. Never blocks, never raises."""
        if not self.endpoints or self._stopping.is_set():
            return
        delivery = new_id("whd")
        body = orjson.dumps(
            {"id": delivery, "type": event, "created_at": int(self.clock()), "data": payload},
            option=orjson.OPT_SORT_KEYS,
        )
        for ep in self.endpoints:
            if ep.events and event not in ep.events:
                continue
            try:
                self._queue.put_nowait((ep, event, body, delivery))
            except queue.Full:
                self.stats.dropped += 1
                log.warning("webhook queue full; dropped %s for %s", event, ep.url)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="keel-webhooks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    self._deliver(client, *item)
                finally:
                    self._queue.task_done()

    def _deliver(
        self, client: Any, ep: WebhookEndpoint, event: str, body: bytes, delivery: str
    ) -> None:
        import httpx

        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            self.stats.attempts += 1
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: sign(ep.secret, body, int(self.clock())),
                EVENT_HEADER: event,
                DELIVERY_HEADER: delivery,
                "user-agent": "keel-webhooks",
            }
            retry_after: float | None = None
            try:
                r = client.post(ep.url, content=body, headers=headers)
                if r.status_code < 300:
                    self.stats.delivered += 1
                    return
                if r.status_code != 429 and r.status_code < 500:
                    log.warning("webhook %s refused %s: HTTP %s", ep.url, event, r.status_code)
                    break
                ra = r.headers.get("retry-after")
                if ra and ra.isdigit():
                    retry_after = float(ra)
            except httpx.HTTPError as e:
                log.info("webhook %s attempt %d failed: %s", ep.url, attempt, e)
            if attempt == self.max_attempts or self._stopping.is_set():
                break
            time.sleep(min(retry_after if retry_after is not None else delay, self.max_backoff_s))
            delay = min(delay * 2, self.max_backoff_s)
        self.stats.failed += 1
        log.warning("webhook delivery of %s to %s failed", event, ep.url)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is drained (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        self._stopping.set()
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout=1.0)


def notifier_from_settings(config: dict[str, Any] | None) -> WebhookNotifier | None:
    """Build a notifier from the ``[prompts]`` settings table (``webhooks = [{url, secret}]``)."""
    from keel.settings import resolve_secret

    hooks = (config or {}).get("webhooks") or []
    endpoints = []
    for h in hooks:
        secret = resolve_secret(h.get("secret"))
        if not h.get("url") or not secret:
            from keel.errors import ConfigError

            raise ConfigError("each [[prompts.webhooks]] needs a url and a secret")
        endpoints.append(
            WebhookEndpoint(url=h["url"], secret=secret, events=tuple(h.get("events") or ()))
        )
    return WebhookNotifier(endpoints) if endpoints else None
