"""The minimal HTTP/1.1 upstream client (``keel.gateway.providers.wire``) against scripted raw
servers on loopback: body framings, keep-alive reuse, broken answers, limits and timeouts, and
the ProviderError codes ``post_json`` maps them to."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from keel.errors import ProviderError
from keel.gateway.providers.http import HttpClient, Timeouts, client_timeout, post_json
from keel.gateway.providers.wire import WireClient, WireProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request (Content-Length framed, as the client sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    return head, body


def run(handler: Handler, client_fn: Callable[[str], Awaitable[Any]]) -> tuple[Any, dict[str, int]]:
    """Serve ``handler`` (called per connection with its index) and run ``client_fn(url)``."""
    stats = {"connections": 0, "requests": 0}

    async def main() -> Any:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            stats["connections"] += 1
            try:
                await handler(r, w, stats["connections"])
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                w.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await client_fn(f"http://127.0.0.1:{port}/v1/chat/completions")
        finally:
            server.close()

    return asyncio.run(main()), stats


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


HDRS = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}


def test_keep_alive_reuses_one_connection_and_sends_the_request_exactly() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        while True:
            head, body = await read_request(r)
            seen.append((head, body))
            w.write(ok(b'{"n": %d}' % len(seen)))
            await w.drain()

    async def client(url: str) -> list[int]:
        c = WireClient()
        out = [orjson.loads((await c.post(url, HDRS, b'{"x":1}')).body)["n"] for _ in range(5)]
        assert c.idle_connections() == 1
        await c.close()
        return out

    out, stats = run(handler, client)
    assert out == [1, 2, 3, 4, 5]
    assert stats["connections"] == 1
    head, body = seen[0]
    assert body == b'{"x":1}'
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer sk-test\r\n" in head
    assert b"\r\nContent-Length: 7\r\n" in head


def test_chunked_body_and_gzip() -> None:
    doc = orjson.dumps({"choices": [{"message": {"content": "x" * 3000}}]})
    packed = gzip.compress(doc)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(doc), 1000):
            part = doc[i : i + 1000]
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.001)
        w.write(b"0\r\n\r\n")
        await read_request(r)
        w.write(ok(packed, b"Content-Encoding: gzip\r\n"))
        await w.drain()
        await read_request(r)

    async def client(url: str) -> tuple[bytes, bytes]:
        c = WireClient()
        a = (await c.post(url, HDRS, b"{}")).body
        b = (await c.post(url, HDRS, b"{}")).body
        await c.close()
        return a, b

    (a, b), stats = run(handler, client)
    assert a == doc
    assert b == doc
    assert stats["connections"] == 1


def test_body_until_close_and_connection_close_header_do_not_reuse() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        if n == 1:  # no length: the body ends with the connection
            w.write(b'HTTP/1.1 200 OK\r\n\r\n{"a": 1}')
        else:
            w.write(ok(b'{"a": 2}', b"Connection: close\r\n"))
        await w.drain()

    async def client(url: str) -> tuple[list[bytes], int]:
        c = WireClient()
        out = [(await c.post(url, HDRS, b"{}")).body for _ in range(2)]
        return out, c.idle_connections()

    (out, idle), stats = run(handler, client)
    assert out == [b'{"a": 1}', b'{"a": 2}']
    assert idle == 0
    assert stats["connections"] == 2


def test_server_closing_mid_body_is_a_connection_error_not_a_short_answer() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"choices": [')
        await w.drain()

    async def client(url: str) -> None:
        with pytest.raises(ConnectionResetError, match="mid-response"):
            await WireClient().post(url, HDRS, b"{}")
        http = HttpClient()
        with pytest.raises(ProviderError) as e:
            await post_json(http, url, HDRS, b"{}", client_timeout(Timeouts(), stream=False), "up")
        assert e.value.code == "connection_error"
        assert e.value.retryable

    run(handler, client)


def test_stale_idle_connection_is_replaced_once() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(ok(b'{"c": %d}' % n))
        await w.drain()
        # the server then closes the kept-alive connection (idle timeout on its side)

    async def client(url: str) -> list[bytes]:
        c = WireClient()
        first = (await c.post(url, HDRS, b"{}")).body
        await asyncio.sleep(0.05)  # the close reaches the client: not reused
        second = (await c.post(url, HDRS, b"{}")).body
        return [first, second]

    out, stats = run(handler, client)
    assert out == [b'{"c": 1}', b'{"c": 2}']
    assert stats["connections"] == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
    ],
)
def test_malformed_response_is_a_protocol_error(answer: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)
        w.write(answer)
        await w.drain()
        await asyncio.sleep(0.5)

    async def client(url: str) -> None:
        with pytest.raises(WireProtocolError, match="invalid HTTP response"):
            await WireClient().post(url, HDRS, b"{}")
        with pytest.raises(ProviderError) as e:
            await post_json(
                HttpClient(), url, HDRS, b"{}", client_timeout(Timeouts(), stream=False), "up"
            )
        assert e.value.code == "connection_error"

    run(handler, client)


def test_oversized_headers_are_refused() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(2000):  # ~80 KiB of headers, never finished
            w.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 30))
        await w.drain()
        await asyncio.sleep(0.5)

    async def client(url: str) -> None:
        with pytest.raises(WireProtocolError, match="too large"):
            await WireClient().post(url, HDRS, b"{}")

    run(handler, client)


def test_silent_upstream_times_out_and_slow_trickle_does_not() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        if n == 1:
            await asyncio.sleep(2)  # silent
            return
        body = b'{"ok": true}'
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for byte in body:  # 12 gaps of 40 ms: longer in total than read_s, each gap shorter
            await asyncio.sleep(0.04)
            w.write(bytes([byte]))
            await w.drain()

    async def client(url: str) -> bytes:
        c = WireClient()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await c.post(url, HDRS, b"{}", read_s=0.2)
        assert 0.15 < loop.time() - t0 < 1.0
        return (await c.post(url, HDRS, b"{}", read_s=0.2)).body

    body, _ = run(handler, client)
    assert body == b'{"ok": true}'


def test_timeout_and_refused_connection_map_to_provider_codes() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)
        await asyncio.sleep(2)

    async def client(url: str) -> None:
        t = client_timeout(Timeouts(connect_s=1, read_s=0.1), stream=False)
        with pytest.raises(ProviderError) as e:
            await post_json(HttpClient(), url, HDRS, b"{}", t, "up")
        assert e.value.code == "upstream_timeout"
        # a port nobody listens on
        s = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = s.sockets[0].getsockname()[1]
        s.close()
        await s.wait_closed()
        with pytest.raises(ProviderError) as e:
            await post_json(HttpClient(), f"http://127.0.0.1:{port}/v1/x", HDRS, b"{}", t, "up")
        assert e.value.code == "connection_error"

    run(handler, client)


def test_error_status_keeps_retry_after_and_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)
        err = b'{"error": {"message": "slow down", "type": "rate_limit"}}'
        w.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: %d\r\n\r\n%s"
            % (len(err), err)
        )
        await read_request(r)
        w.write(ok(b"{}"))
        await w.drain()
        await read_request(r)

    async def client(url: str) -> Any:
        http = HttpClient()
        t = client_timeout(Timeouts(), stream=False)
        with pytest.raises(ProviderError) as e:
            await post_json(http, url, HDRS, b"{}", t, "up")
        assert e.value.upstream_status == 429
        assert e.value.retry_after == 7.0
        assert "slow down" in str(e.value)
        return await post_json(http, url, HDRS, b"{}", t, "up")

    out, stats = run(handler, client)
    assert out == {}
    assert stats["connections"] == 1


def test_cancelled_request_does_not_return_its_connection_to_the_pool() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        if n == 1:
            await asyncio.sleep(1)
        w.write(ok(b'{"c": %d}' % n))
        await w.drain()
        await read_request(r)

    async def client(url: str) -> bytes:
        c = WireClient()
        task = asyncio.ensure_future(c.post(url, HDRS, b"{}"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c.idle_connections() == 0
        return (await c.post(url, HDRS, b"{}")).body

    body, stats = run(handler, client)
    assert body == b'{"c": 2}'
    assert stats["connections"] == 2


def test_header_injection_is_refused() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await read_request(r)

    async def client(url: str) -> None:
        with pytest.raises(ValueError, match="CR or LF"):
            await WireClient().post(url, {"X-A": "b\r\nHost: evil"}, b"{}")

    run(handler, client)
