"""A scripted OpenAI-compatible upstream on loopback that counts and records requests.

Behaviour per request (``mode``): ``quality`` answers from ``answers`` (question -> answer)
with a correctness that depends on words in the system prompt (``careful`` = every row,
``terse`` = 30 % of rows, otherwise 70 %); ``echo`` repeats the last user message; ``down``
answers 503 to everything. ``latency_s`` delays each answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from typing import Any

from aiohttp import web


def _bucket(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10


def scripted_answer(messages: list[dict[str, Any]], answers: dict[str, str]) -> str:
    system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
    user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    correct = answers.get(user, "unknown")
    share = 10 if "careful" in system else 3 if "terse" in system else 7
    return correct if _bucket(user) < share else "I am not sure."


class ScriptedUpstream:
    """Run with ``with ScriptedUpstream() as up:``; ``up.base_url`` is ``http://127.0.0.1:P/v1``."""

    def __init__(
        self,
        *,
        mode: str = "echo",
        latency_s: float = 0.0,
        answers: dict[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.mode = mode
        self.latency_s = latency_s
        self.answers = answers or {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.mode == "down":
            return web.json_response(
                {"error": {"message": "upstream down", "type": "server_error"}}, status=503
            )
        msgs = body.get("messages") or []
        if self.mode == "quality":
            text = scripted_answer(msgs, self.answers)
        else:
            text = next(
                (m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), ""
            )
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    def __enter__(self) -> ScriptedUpstream:
        ready = threading.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", self._port))
        self.port = sock.getsockname()[1]

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.SockSite(self._runner, sock)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def user_texts(self) -> list[str]:
        with self._lock:
            reqs = list(self.requests)
        return [
            next(
                (
                    m.get("content", "")
                    for m in reversed(r.get("messages") or [])
                    if m.get("role") == "user"
                ),
                "",
            )
            for r in reqs
        ]


if __name__ == "__main__":  # a standalone upstream for manual runs and the resume test
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with ScriptedUpstream(
        mode="echo", latency_s=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0, port=port
    ) as up:
        print(up.base_url, flush=True)
        threading.Event().wait()
