"""A minimal keep-alive HTTP/1.1 client for plain-``http://`` upstreams (the gateway hot path).

aiohttp's ``ClientSession`` cost ~30 % of the gateway's event loop per proxied request (request
and response objects, multidicts, a stream reader, timer contexts). For the one thing the
non-streaming path needs — POST a JSON body, read a whole response — this module keeps one
pool of idle connections per upstream host, writes a pre-built request head plus the body in
one ``transport.write``, and parses the answer with httptools (llhttp: Content-Length, chunked
and read-until-close bodies) straight into a bytes buffer.

What it does not do, on purpose: TLS, proxies, redirects, compression other than gzip/deflate,
``Expect: 100-continue``. ``post_json`` uses it only for ``http://`` URLs; https upstreams and
SSE streams stay on aiohttp (see ``keel.gateway.providers.http``). Failures surface as
``TimeoutError`` or ``ConnectionError`` subclasses, which the caller maps to the same
``ProviderError`` codes as aiohttp's (``upstream_timeout``, ``connection_error``).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_IDLE_PER_HOST = 256
KEEPALIVE_S = 30.0


class WireProtocolError(ConnectionError):
    """The upstream sent something that is not a valid HTTP/1.1 response (bad status line,
    headers over the limit, a body over the limit, an unknown content encoding)."""


class WireResponse:
    """Status, headers (lower-case names; the last value wins) and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Conn(asyncio.Protocol):
    """One upstream connection; carries at most one request at a time."""

    __slots__ = (
        "_body",
        "_got",
        "_head_bytes",
        "_headers",
        "_headers_done",
        "_keep_alive",
        "_last_rx",
        "_parser",
        "_read_s",
        "_status",
        "_timer",
        "_until_eof",
        "_waiter",
        "closed",
        "idle_since",
        "loop",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[WireResponse] | None = None
        self._parser: Any = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._got = 0
        self._head_bytes = 0
        self._headers_done = False
        self._until_eof = False
        self._keep_alive = False
        self._timer: asyncio.TimerHandle | None = None
        self._read_s = 0.0
        self._last_rx = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes while idle: the connection cannot be reused
            self._close()
            return
        self._last_rx = time.monotonic()
        self._got += len(data)
        if not self._headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._fail(WireProtocolError("upstream response headers are too large"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(WireProtocolError(f"invalid HTTP response from upstream ({e})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done and self._until_eof:
                self._finish()  # a body delimited by the end of the connection
                return
            what = "mid-response" if self._got else "before answering"
            self._fail(ConnectionResetError(f"upstream closed the connection {what}"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        p = self._parser
        self._status = p.get_status_code()
        self._keep_alive = p.should_keep_alive()
        h = self._headers
        if (
            "content-length" not in h
            and "transfer-encoding" not in h
            and self._status not in (204, 304)
            and self._status >= 200
        ):
            self._until_eof = True
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if self._got - self._head_bytes > MAX_BODY_BYTES:
            self._fail(WireProtocolError("upstream response body is too large"))

    def on_message_complete(self) -> None:
        self._finish()

    # -- request / response
    def request(self, data: bytes, read_s: float) -> asyncio.Future[WireResponse]:
        """Write one request; the future resolves with the whole response."""
        fut: asyncio.Future[WireResponse] = self.loop.create_future()
        self._waiter = fut
        self._parser = httptools.HttpResponseParser(self)
        self._status = 0
        self._headers = {}
        self._body = []
        self._got = 0
        self._head_bytes = 0
        self._headers_done = False
        self._until_eof = False
        self._keep_alive = False
        self._read_s = read_s
        self._last_rx = time.monotonic()
        self._timer = self.loop.call_later(read_s, self._on_timer)
        assert self.transport is not None
        self.transport.write(data)
        return fut

    def _on_timer(self) -> None:
        # one timer per request, re-armed lazily: a read timeout is an idle gap, not a total
        gap = time.monotonic() - self._last_rx
        if gap < self._read_s:
            self._timer = self.loop.call_later(self._read_s - gap, self._on_timer)
            return
        self._timer = None
        self._fail(TimeoutError("upstream did not answer in time"))

    def _finish(self) -> None:
        fut = self._waiter
        if fut is None or fut.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        enc = self._headers.get("content-encoding")
        if enc and enc != "identity":
            try:
                body = _decode(body, enc)
            except (zlib.error, WireProtocolError) as e:
                self._fail(WireProtocolError(f"could not decode the upstream body ({e})"))
                return
        self._waiter = None
        fut.set_result(WireResponse(self._status, self._headers, body))

    def _fail(self, exc: BaseException) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        fut = self._waiter
        self._waiter = None
        self._close()
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        """True when the last exchange ended cleanly and the server keeps the connection."""
        return not self.closed and self._waiter is None and self._keep_alive


def _decode(body: bytes, encoding: str) -> bytes:
    enc = encoding.strip().lower()
    if enc in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if enc == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise WireProtocolError(f"unsupported content-encoding {encoding!r}")


class _Target:
    """Pre-encoded request head for one (URL, header set) and the pool key it connects to."""

    __slots__ = ("head", "headers", "host", "port")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"wire client handles plain http:// URLs only, not {url!r}")
        self.headers = headers  # held so its id() stays unique while cached
        self.host = u.hostname
        self.port = u.port or 80
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        host_hdr = u.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_hdr}"]
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        have_ua = False
        for k, v in headers.items():
            if k.lower() in skip:
                continue
            if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
                raise ValueError("header names and values may not contain CR or LF")
            have_ua = have_ua or k.lower() == "user-agent"
            lines.append(f"{k}: {v}")
        if not have_ua:
            lines.append("User-Agent: keel-gateway")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


async def _exchange(conn: _Conn, data: bytes, read_s: float) -> WireResponse:
    try:
        return await conn.request(data, read_s)
    except asyncio.CancelledError:
        conn._fail(ConnectionAbortedError("request cancelled"))  # never reuse a half exchange
        raise


class WireClient:
    """Keep-alive connection pools, one per upstream ``host:port``, for the running loop."""

    def __init__(self, max_idle_per_host: int = MAX_IDLE_PER_HOST) -> None:
        self._max_idle = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._targets: dict[tuple[str, int], _Target] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _target(self, url: str, headers: Mapping[str, str]) -> _Target:
        key = (url, id(headers))
        t = self._targets.get(key)
        if t is None or t.headers is not headers:
            if len(self._targets) > 512:
                self._targets.clear()
            t = self._targets[key] = _Target(url, headers)  # type: ignore[index]
        return t

    async def _connect(self, host: str, port: int, connect_s: float) -> _Conn:
        loop = asyncio.get_running_loop()
        _t, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Conn(loop), host, port), connect_s
        )
        return conn

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_s: float = 5.0,
        read_s: float = 60.0,
    ) -> WireResponse:
        """POST ``body`` and return the whole response. Raises ``TimeoutError`` or a
        ``ConnectionError`` (``WireProtocolError`` for a malformed answer)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections belong to the loop that opened them
            self._drop_all()
            self._loop = loop
        t = self._target(url, headers)
        data = b"".join((t.head, str(len(body)).encode(), b"\r\n\r\n", body))
        pool = self._idle.setdefault((t.host, t.port), [])
        now = time.monotonic()
        while pool:
            conn = pool.pop()  # LIFO: the warmest connection
            if conn.closed:
                continue
            if now - conn.idle_since > KEEPALIVE_S:
                conn._close()
                continue
            try:
                resp = await _exchange(conn, data, read_s)
            except ConnectionResetError:
                if conn._got:
                    raise
                # the server closed the idle connection as we reused it: nothing was
                # answered, so the request is sent once more on a fresh connection
                break
            self._release(pool, conn)
            return resp
        conn = await self._connect(t.host, t.port, connect_s)
        resp = await _exchange(conn, data, read_s)
        self._release(pool, conn)
        return resp

    def _release(self, pool: list[_Conn], conn: _Conn) -> None:
        if conn.reusable() and len(pool) < self._max_idle:
            conn.idle_since = time.monotonic()
            pool.append(conn)
        else:
            conn._close()

    def _drop_all(self) -> None:
        for pool in self._idle.values():
            for c in pool:
                c._close()
        self._idle.clear()

    def idle_connections(self) -> int:
        """Connections kept open for reuse (all hosts)."""
        return sum(1 for pool in self._idle.values() for c in pool if not c.closed)

    async def close(self) -> None:
        """Close every idle connection."""
        self._drop_all()
