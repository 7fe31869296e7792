"""``keel serve --workers N``: one parent that accepts, N worker processes that serve.

Why not uvicorn's own ``--workers``: there every worker accepts from the shared listening
socket, and whichever process wins the race gets the connection. OTLP exporters and gateway
clients hold a few long-lived keep-alive connections, so a race won 3–1 left one worker
saturated and the other idle for the life of those connections: the same ingest benchmark
gave 21,000–23,000 spans/s when 4 client connections split 2–2 and ~16,000 when they split
3–1 (docs/bench-tracing.md). As Node's cluster module does by default, the parent here accepts
every connection and hands its descriptor (``SCM_RIGHTS`` over a ``socketpair``) to the
worker holding the fewest open connections; each worker reports back when one of its
connections closes. The parent does nothing per request, only per connection.

Workers run the same uvicorn ``Server`` (lifespan, graceful shutdown, protocols) with no
listening socket of their own; they serve the connections handed to them through
``loop.connect_accepted_socket``.

A worker that dies is restarted; one that dies before it ever became ready stops the whole
server with an error (a broken install must fail once, loudly, not restart forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("keel.server.workers")

READY = b"r"  # worker → parent: serving
CLOSED = b"c"  # worker → parent: one of its connections closed
CONN = b"n"  # parent → worker: a connection (its descriptor rides along)
_MAX_RESTARTS = 5  # within _RESTART_WINDOW_S, per worker
_RESTART_WINDOW_S = 60.0


# ----------------------------------------------------------------------------- worker side


def _make_server_class() -> type:
    import uvicorn

    class ChannelServer(uvicorn.Server):
        """A uvicorn server fed connections by the parent instead of a listening socket."""

        def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
            super().__init__(config)
            self.channel = channel
            self._pending: set[asyncio.Task[Any]] = set()
            self._reading = False

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=[])  # lifespan, no listener
            if not self.started:
                return
            loop = asyncio.get_running_loop()
            self.channel.setblocking(False)
            loop.add_reader(self.channel.fileno(), self._on_channel, loop)
            self._reading = True
            with contextlib.suppress(OSError):
                self.channel.send(READY)

        def _protocol(self) -> asyncio.Protocol:
            config = self.config
            proto: Any = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            lost = proto.connection_lost
            channel = self.channel

            def connection_lost(exc: Exception | None) -> None:
                try:
                    lost(exc)
                finally:
                    with contextlib.suppress(OSError):
                        channel.send(CLOSED)

            proto.connection_lost = connection_lost
            return proto  # type: ignore[no-any-return]

        def _on_channel(self, loop: asyncio.AbstractEventLoop) -> None:
            while True:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(self.channel, 16, 8)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    msg, fds = b"", []
                if not msg and not fds:  # the parent is gone: finish what is open, then exit
                    self._stop_reading(loop)
                    self.should_exit = True
                    return
                for fd in fds:
                    sock = socket.socket(fileno=fd)
                    sock.setblocking(False)
                    task = loop.create_task(loop.connect_accepted_socket(self._protocol, sock))
                    self._pending.add(task)
                    task.add_done_callback(self._connected(sock))

        def _connected(self, sock: socket.socket) -> Callable[[asyncio.Task[Any]], None]:
            def done(task: asyncio.Task[Any]) -> None:
                self._pending.discard(task)
                if task.cancelled() or task.exception() is not None:
                    sock.close()
                    with contextlib.suppress(OSError):
                        self.channel.send(CLOSED)

            return done

        def _stop_reading(self, loop: asyncio.AbstractEventLoop) -> None:
            if self._reading:
                loop.remove_reader(self.channel.fileno())
                self._reading = False

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            self._stop_reading(asyncio.get_running_loop())
            await super().shutdown(sockets=sockets)

    return ChannelServer


def worker_main(channel_fd: int, log_level: str) -> None:
    """Entry of one worker process (``python -m keel.server.workers FD LEVEL``)."""
    import uvicorn

    from keel.cli.serve import app_from_env

    channel = socket.socket(fileno=channel_fd)
    config = uvicorn.Config(
        app_from_env, factory=True, log_level=log_level, access_log=False, lifespan="on"
    )
    server = _make_server_class()(config, channel)
    server.run()


# ----------------------------------------------------------------------------- parent side


class _Worker:
    def __init__(self, index: int, log_level: str, env: dict[str, str]) -> None:
        self.index = index
        self.log_level = log_level
        self.env = env
        self.restarts: list[float] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.ready = False
        self.open = 0

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "keel.server.workers", str(theirs.fileno()), self.log_level],
                pass_fds=[theirs.fileno()],
                env=self.env,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self.channel = ours
        self.ready = False
        self.open = 0

    def hand(self, conn: socket.socket) -> bool:
        """Pass ``conn`` to this worker; False if the worker cannot take it."""
        if self.channel is None:
            return False
        try:
            socket.send_fds(self.channel, [CONN], [conn.fileno()])
        except OSError:  # dead worker, or its channel is full (it is not reading)
            return False
        self.open += 1
        return True

    def read(self) -> bool:
        """Take the worker's messages; False when its channel closed (the worker exited)."""
        assert self.channel is not None
        while True:
            try:
                msg = self.channel.recv(64)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if not msg:
                return False
            if msg == READY:
                self.ready = True
            elif msg == CLOSED:
                self.open = max(0, self.open - 1)

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def supported() -> bool:
    """Descriptor passing over a SOCK_SEQPACKET socketpair works here (Linux; not macOS)."""
    if not hasattr(socket, "send_fds") or not hasattr(socket, "SOCK_SEQPACKET"):
        return False
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return False
    a.close()
    b.close()
    return True


def pick(workers: list[_Worker], turn: int) -> list[_Worker]:
    """Ready workers in the order to try: fewest open connections first, ties in turn."""
    n = len(workers)
    order = [workers[(turn + i) % n] for i in range(n)]
    return sorted((w for w in order if w.ready and w.channel is not None), key=lambda w: w.open)


def run(host: str, port: int, workers: int, log_level: str, env: dict[str, str]) -> None:
    """Bind, start ``workers`` processes and hand them connections until SIGINT/SIGTERM."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::" binds IPv6 (and v4)
    listener = socket.create_server(
        (host, port), family=family, backlog=2048, dualstack_ipv6=host == "::"
    )
    listener.setblocking(False)
    stopping = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    pool = [_Worker(i, log_level, env) for i in range(workers)]
    sel = selectors.DefaultSelector()
    failed: str | None = None
    turn = 0
    try:
        for w in pool:
            w.start()
            assert w.channel is not None
            sel.register(w.channel, selectors.EVENT_READ, w)
        listening = False
        # Connections are taken only once every worker serves (or a minute has passed): a
        # client that connects meanwhile waits in the backlog instead of pinning its
        # keep-alive connection to the first worker up.
        warm_until = time.monotonic() + 60.0
        while not stopping:
            if warm_until and (all(w.ready for w in pool) or time.monotonic() > warm_until):
                warm_until = 0.0
            any_ready = not warm_until and any(w.ready for w in pool)
            if any_ready and not listening:
                sel.register(listener, selectors.EVENT_READ, None)
                listening = True
            elif not any_ready and listening:
                sel.unregister(listener)  # connections wait in the backlog meanwhile
                listening = False
            for key, _ in sel.select(0.5):
                w = key.data
                if w is None:
                    turn = _accept(listener, pool, turn)
                elif not w.read():
                    sel.unregister(key.fileobj)
                    w.close_channel()
            for w in pool:
                if w.proc is not None and w.proc.poll() is not None and not stopping:
                    failed = _restart(w, sel)
                    if failed:
                        stopping = True
                        break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.unregister(listener)
        listener.close()
        _stop_all(pool)
        sel.close()
    if failed:
        from keel.errors import ConfigError

        raise ConfigError(
            failed,
            hint="see the worker's error above; `keel serve` without --workers shows it directly",
        )


def _accept(listener: socket.socket, pool: list[_Worker], turn: int) -> int:
    for _ in range(64):
        try:
            conn, _addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # e.g. EMFILE: leave it in the backlog, try again on the next wake
            log.warning("accept failed", exc_info=True)
            break
        with conn:
            for w in pick(pool, turn):
                if w.hand(conn):
                    break
            else:
                log.warning("no worker could take a connection; it was closed")
        turn += 1
    return turn


def _restart(w: _Worker, sel: selectors.BaseSelector) -> str | None:
    """Restart a worker that exited; the reason to stop everything instead, if any."""
    assert w.proc is not None
    code = w.proc.returncode
    if w.channel is not None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(w.channel)
        w.close_channel()
    now = time.monotonic()
    if not w.ready:
        return f"worker {w.index} exited with status {code} before it started serving"
    w.restarts = [t for t in w.restarts if now - t < _RESTART_WINDOW_S] + [now]
    if len(w.restarts) > _MAX_RESTARTS:
        return f"worker {w.index} exited {len(w.restarts)} times within {_RESTART_WINDOW_S:.0f} s"
    log.warning("worker %d exited with status %s; restarting it", w.index, code)
    w.start()
    assert w.channel is not None
    sel.register(w.channel, selectors.EVENT_READ, w)
    return None


def _stop_all(pool: list[_Worker], timeout: float = 30.0) -> None:
    for w in pool:
        w.close_channel()  # a worker whose parent channel closes finishes and exits too
        if w.proc is not None and w.proc.poll() is None:
            with contextlib.suppress(OSError):
                w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in pool:
        if w.proc is None:
            continue
        try:
            w.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in %.0f s; killing it", w.index, timeout)
            w.proc.kill()
            w.proc.wait()


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), sys.argv[2])
