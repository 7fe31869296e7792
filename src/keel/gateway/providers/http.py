"""The upstream HTTP client: one shared aiohttp session, SSE reading, error mapping.

aiohttp (not httpx) sits on the hot path because it decides most of the gateway's speed (see
DESIGN.md "Measured floors"). Every error leaves here as a classified ``ProviderError``; the
message never contains request headers, so provider keys cannot leak through it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from keel.errors import ProviderError
from keel.gateway.provider import parse_retry_after, provider_error
from keel.gateway.providers.wire import WireClient

CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "too many tokens",
)
FILTER_MARKERS = (
    "content_filter",
    "content_policy_violation",
    "content management policy",
    "responsibleaipolicyviolation",
)


_SECRETS = re.compile(r"(sk-[A-Za-z0-9_\-*.]{4,}|[A-Za-z0-9_\-]{32,})")


def redact(text: str) -> str:
    """Remove key-like tokens (``sk-...``, long opaque strings) from upstream error text; some
    providers echo (part of) the key they were sent."""
    return _SECRETS.sub("[redacted]", text)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt limits: connect, read (time to headers / body, and idle gap in a stream)."""

    connect_s: float = 5.0
    read_s: float = 60.0
    idle_s: float = 30.0


class HttpClient:
    """One ``aiohttp.ClientSession`` per process (created lazily inside the running loop), and
    the minimal keep-alive client (``wire``) that ``post_json`` uses for plain ``http://``
    upstreams; ``wire=False`` sends everything through aiohttp."""

    def __init__(self, limit: int = 1000, limit_per_host: int = 0, *, wire: bool = True) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self.wire: WireClient | None = WireClient() if wire else None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session."""
        s = self._session
        if s is None or s.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                ttl_dns_cache=300,
                keepalive_timeout=30,
                enable_cleanup_closed=False,
            )
            s = self._session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                # an explicit User-Agent rather than skip_auto_headers, which makes aiohttp
                # build a sorted multidict on every request (~5 % of the event loop's time)
                headers={"User-Agent": "keel-gateway"},
                auto_decompress=True,
                trust_env=False,
            )
        return s

    async def close(self) -> None:
        """Close the session (at shutdown)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        if self.wire is not None:
            await self.wire.close()


def classify_error(status: int, headers: Any, data: bytes, where: str) -> ProviderError:
    """Turn an upstream error response (OpenAI or Anthropic shaped) into a ProviderError."""
    message = f"{where} answered HTTP {status}"
    code: str | None = None
    try:
        doc = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    text = ""
    if isinstance(err, dict):
        upstream_msg = redact(str(err.get("message") or "")[:500])
        etype = str(err.get("type") or "")
        ecode = str(err.get("code") or "")
        text = f"{upstream_msg} {etype} {ecode}".lower()
        if upstream_msg:
            message = f"{where} answered HTTP {status}: {upstream_msg}"
        if etype == "overloaded_error":
            code = "overloaded"
    elif isinstance(err, str):
        text = err.lower()
        message = f"{where} answered HTTP {status}: {redact(err[:500])}"
    if status == 400 or status == 413:
        if any(m in text for m in CONTEXT_MARKERS):
            code = "context_length_exceeded"
        elif any(m in text for m in FILTER_MARKERS):
            code = "content_filter"
    return provider_error(message, status=status, code=code, retry_after=parse_retry_after(headers))


def connection_error(exc: BaseException, where: str, *, started: bool = False) -> ProviderError:
    """Map aiohttp / asyncio failures; ``started`` is True once stream output was seen."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        if started:
            return provider_error(
                f"{where} stopped sending mid-stream (idle timeout)",
                status=None,
                code="stream_stall",
            )
        return provider_error(
            f"{where} did not answer in time", status=None, code="upstream_timeout"
        )
    if started:
        return provider_error(
            f"{where} closed the stream before the answer was complete ({type(exc).__name__})",
            status=None,
            code="stream_cut",
        )
    return provider_error(
        f"could not reach {where} ({type(exc).__name__})", status=None, code="connection_error"
    )


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, bytes]]:
    """(event, data) pairs of an SSE body; ends at EOF. ``data: [DONE]`` is passed through."""
    event: str | None = None
    data: list[bytes] = []
    content = resp.content
    while True:
        line = await content.readline()
        if not line:
            if data:
                yield event, b"\n".join(data)
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event = None
            data = []
            continue
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
        # comments (":") and other fields are ignored


async def post_json(
    client: HttpClient,
    url: str,
    headers: dict[str, str],
    payload: bytes,
    timeout: aiohttp.ClientTimeout,
    where: str,
) -> Any:
    """POST and return the decoded JSON body, or raise a classified ProviderError.

    Plain ``http://`` URLs go through the minimal keep-alive client (``HttpClient.wire``),
    everything else (https) through aiohttp; both map failures to the same ProviderErrors."""
    wire = client.wire
    if wire is not None and url.startswith("http://"):
        try:
            r = await wire.post(
                url,
                headers,
                payload,
                connect_s=timeout.sock_connect or timeout.connect or 5.0,
                read_s=timeout.sock_read or 60.0,
            )
        except (TimeoutError, ConnectionError, OSError) as e:
            raise connection_error(e, where) from None
        data = r.body
        if r.status >= 400:
            raise classify_error(r.status, r.headers, data, where)
    else:
        data = await _post_aiohttp(client, url, headers, payload, timeout, where)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise provider_error(
            f"{where} answered with a body that is not JSON", status=502, code="malformed_response"
        ) from None


async def _post_aiohttp(
    client: HttpClient,
    url: str,
    headers: dict[str, str],
    payload: bytes,
    timeout: aiohttp.ClientTimeout,
    where: str,
) -> bytes:
    try:
        async with client.session.post(url, data=payload, headers=headers, timeout=timeout) as resp:
            data = await resp.read()
            if resp.status >= 400:
                raise classify_error(resp.status, resp.headers, data, where)
    except ProviderError:
        raise
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
        raise connection_error(e, where) from None
    return data


def client_timeout(t: Timeouts, *, stream: bool) -> aiohttp.ClientTimeout:
    """aiohttp timeout for one attempt."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=t.connect_s,
        sock_connect=t.connect_s,
        sock_read=t.idle_s if stream else t.read_s,
    )


def stream_event_json(data: bytes, provider: str, *, started: bool) -> dict[str, Any] | None:
    """One SSE event's JSON object (None for a non-object). Invalid JSON is a ``malformed_chunk``
    provider error, retryable only while nothing has reached the client yet."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise provider_error(
            f"{provider} sent a stream event that is not valid JSON",
            status=None,
            code="malformed_chunk",
            retryable=not started,
        ) from None
    return doc if isinstance(doc, dict) else None
