"""Run an ASGI app under uvicorn on a loopback port, in a thread (shared by gateway tests)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def serve_in_thread(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Start ``app``; returns once it accepts requests (stop: ``server.should_exit = True``)."""
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop="asyncio", lifespan="on"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not t.is_alive():
            raise RuntimeError("keel did not start")
        time.sleep(0.02)
    return server, t, sock.getsockname()[1]
