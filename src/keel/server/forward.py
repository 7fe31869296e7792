"""Forward every accepted OTLP payload to another OTLP/HTTP endpoint (``tracing.forward_endpoint``).

So Keel can sit beside an existing collector: the payload is passed on byte for byte (same
``Content-Type`` and ``Content-Encoding``) after Keel accepted it. Forwarding is asynchronous and
bounded: :meth:`OtlpForwarder.offer` never blocks or fails the ingest request; when the queue is
full or the endpoint keeps failing, payloads are dropped and counted (``dropped``), and a warning
is logged at most once a minute. Retryable answers (429, 502, 503, 504, connection errors) are
retried a few times with backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("keel.forward")

RETRYABLE = {429, 502, 503, 504}


class OtlpForwarder:
    """A bounded queue of payloads and one task that posts them."""

    def __init__(
        self,
        endpoint: str,
        headers: dict[str, str] | None = None,
        *,
        max_queue: int = 1000,
        max_queue_bytes: int = 256 * 1024 * 1024,
        attempts: int = 4,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.headers = dict(headers or {})
        self.max_queue_bytes = max_queue_bytes
        self.attempts = attempts
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue(max_queue)
        self._bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self._last_warning = 0.0
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    async def start(self) -> None:
        """Start the sender task (call on the server's event loop)."""
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        self._task = asyncio.create_task(self._run(), name="keel-otlp-forward")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Try to send what is queued for up to ``drain_s``, then stop."""
        if self._task is not None:
            deadline = time.monotonic() + drain_s
            while not self._queue.empty() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def offer(self, body: bytes, content_type: str, content_encoding: str | None = None) -> bool:
        """Queue a payload; False (and counted) when it had to be dropped. Never blocks."""
        headers = {"Content-Type": content_type, **self.headers}
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        if self._task is None or self._bytes + len(body) > self.max_queue_bytes:
            self._drop("queue over its byte budget" if self._task else "forwarder not running")
            return False
        try:
            self._queue.put_nowait((body, headers))
        except asyncio.QueueFull:
            self._drop("queue full")
            return False
        self._bytes += len(body)
        return True

    def _drop(self, why: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning(
                "forwarding to %s: dropped a payload (%s; %d dropped so far)",
                self.endpoint,
                why,
                self.dropped,
            )

    async def _run(self) -> None:
        while True:
            body, headers = await self._queue.get()
            try:
                await self._send(body, headers)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("forwarding failed", exc_info=True)
                self.failed += 1
                self._drop("endpoint failing")
            finally:
                self._bytes -= len(body)

    async def _send(self, body: bytes, headers: dict[str, str]) -> None:
        delay = 0.5
        for attempt in range(self.attempts):
            retry_after: float | None = None
            try:
                async with self._session.post(self.endpoint, data=body, headers=headers) as r:
                    await r.read()
                    if r.status < 300:
                        self.sent += 1
                        return
                    if r.status not in RETRYABLE:
                        raise RuntimeError(f"endpoint answered {r.status}")
                    with contextlib.suppress(TypeError, ValueError):
                        retry_after = float(r.headers.get("Retry-After", ""))
            except (TimeoutError, OSError) as e:
                if attempt == self.attempts - 1:
                    raise RuntimeError(f"endpoint unreachable: {e}")
            except Exception as e:
                if "answered" in str(e) or attempt == self.attempts - 1:
                    raise
            if attempt < self.attempts - 1:
                await asyncio.sleep(min(30.0, retry_after if retry_after else delay))
                delay *= 2
        raise RuntimeError("endpoint kept failing")
