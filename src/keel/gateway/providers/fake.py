"""``fake:`` models whose name picks a behaviour, for tests, demos and benchmarks.

``fake:echo`` (the last user message), ``fake:text`` (a fixed sentence), ``fake:json``,
``fake:tool`` (calls the first tool of the request), ``fake:error-<status>[-retry-<s>]``,
``fake:context-length``, ``fake:content-filter``, ``fake:slow-<ms>`` (slow first token),
``fake:cut`` (the stream ends mid-answer), ``fake:stall`` (the stream stops sending),
``fake:malformed`` (the 3rd chunk cannot be decoded), ``fake:nodone`` (a complete stream
without a terminator, which is fine), ``fake:flap`` (every other request fails with 503).
The same behaviours are served over HTTP by :mod:`keel.gateway.mockupstream`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, provider_error

FIXED_TEXT = "This is a fixed answer from the fake provider."
BEHAVIOURS = (
    "echo",
    "text",
    "json",
    "tool",
    "error-429",
    "error-500",
    "context-length",
    "content-filter",
    "slow-200",
    "cut",
    "stall",
    "malformed",
    "nodone",
    "flap",
)

_ids = itertools.count(1)


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message (parts joined), or ''."""
    for m in reversed(messages or ()):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(
                    p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"
                )
    return ""


def count_tokens(text: str) -> int:
    """A cheap, deterministic token estimate (about four characters per token)."""
    return (len(text) + 3) // 4


def prompt_tokens(body: Body) -> int:
    """Token estimate for the messages of a request."""
    n = 0
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            c = m.get("content")
            n += 4 + count_tokens(c if isinstance(c, str) else orjson.dumps(c).decode())
    return max(n, 1)


def error_for(behaviour: str) -> ProviderError | None:
    """The error a behaviour raises before any output, if any."""
    if behaviour.startswith("error-"):
        parts = behaviour.split("-")
        status = int(parts[1]) if parts[1].isdigit() else 500
        retry_after = float(parts[3]) if len(parts) >= 4 and parts[2] == "retry" else None
        return provider_error(
            f"fake upstream answered {status}", status=status, retry_after=retry_after
        )
    if behaviour == "context-length":
        return provider_error(
            "This model's maximum context length is 128 tokens.",
            status=400,
            code="context_length_exceeded",
        )
    if behaviour == "content-filter":
        return provider_error(
            "The response was filtered due to the prompt triggering content management policy.",
            status=400,
            code="content_filter",
        )
    return None


def answer(behaviour: str, body: Body) -> tuple[str | None, list[Body] | None]:
    """(text, tool_calls) a behaviour answers with."""
    if behaviour == "text":
        return FIXED_TEXT, None
    if behaviour == "json":
        return orjson.dumps(
            {"answer": last_user_text(body.get("messages", [])), "ok": True}
        ).decode(), None
    if behaviour == "tool":
        tools = body.get("tools") or []
        name = "get_weather"
        if tools and isinstance(tools[0], dict):
            name = (tools[0].get("function") or {}).get("name") or name
        args = orjson.dumps({"query": last_user_text(body.get("messages", []))}).decode()
        return None, [
            {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": args}}
        ]
    return last_user_text(body.get("messages", [])), None


def completion(model: str, text: str | None, tool_calls: list[Body] | None, body: Body) -> Body:
    """A ``chat.completion`` dict."""
    n = max(1, int(body.get("n") or 1))
    msg: Body = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    finish = "tool_calls" if tool_calls else "stop"
    out_tokens = count_tokens(text or "") + (
        count_tokens(orjson.dumps(tool_calls).decode()) if tool_calls else 0
    )
    pt = prompt_tokens(body)
    return {
        "id": f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": dict(msg), "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": pt,
            "completion_tokens": out_tokens * n,
            "total_tokens": pt + out_tokens * n,
        },
    }


def chunks(model: str, text: str | None, tool_calls: list[Body] | None, body: Body) -> list[Body]:
    """The ``chat.completion.chunk`` sequence for an answer (usage last, as OpenAI sends it)."""
    cid = f"chatcmpl-fake{next(_ids)}"
    created = int(time.time())

    def chunk(delta: Body, finish: str | None = None, index: int = 0) -> Body:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }

    out: list[Body] = []
    n = max(1, int(body.get("n") or 1))
    for i in range(n):
        out.append(chunk({"role": "assistant", "content": ""}, index=i))
        if tool_calls:
            for j, tc in enumerate(tool_calls):
                fn = tc["function"]
                out.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": j,
                                    "id": tc["id"],
                                    "type": "function",
                                    "function": {"name": fn["name"], "arguments": ""},
                                }
                            ]
                        },
                        index=i,
                    )
                )
                args = fn["arguments"]
                for k in range(0, len(args), 8):
                    out.append(
                        chunk(
                            {
                                "tool_calls": [
                                    {"index": j, "function": {"arguments": args[k : k + 8]}}
                                ]
                            },
                            index=i,
                        )
                    )
            out.append(chunk({}, "tool_calls", index=i))
        else:
            words = (text or "").split(" ")
            for k, w in enumerate(words):
                out.append(chunk({"content": w if k == 0 else " " + w}, index=i))
            out.append(chunk({}, "stop", index=i))
    done = completion(model, text, tool_calls, body)
    out.append({**chunk({}), "choices": [], "usage": done["usage"]})
    return out


class FakeProvider:
    """Serves every ``fake:<behaviour>`` model; no network, deterministic."""

    name = "fake"

    def __init__(self, stall_s: float = 3600.0) -> None:
        self.stall_s = stall_s
        self._flap = itertools.count()

    def models(self) -> list[str]:
        """The documented behaviours (any ``fake:*`` name is accepted)."""
        return [f"fake:{b}" for b in BEHAVIOURS]

    @staticmethod
    def _behaviour(body: Body) -> str:
        model = str(body.get("model") or "")
        return model.split(":", 1)[1] if ":" in model else model

    def _pre(self, behaviour: str) -> None:
        err = error_for(behaviour)
        if err is None and behaviour == "flap" and next(self._flap) % 2 == 0:
            err = provider_error("fake upstream flapping: 503", status=503)
        if err is not None:
            raise err

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """A whole completion."""
        b = self._behaviour(body)
        self._pre(b)
        if b.startswith("slow-"):
            await asyncio.sleep(int(b[5:] or 0) / 1000.0)
        elif b == "stall":
            await asyncio.sleep(self.stall_s)
        elif b in ("cut", "malformed"):
            raise provider_error(
                "upstream closed the connection before the answer was complete",
                status=None,
                code="stream_cut",
            )
        text, tools = answer(b, body)
        return completion(str(body.get("model")), text, tools, body)

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Chunks, with the faults the behaviour asks for."""
        b = self._behaviour(body)
        self._pre(b)
        text, tools = answer(b, body)
        if b in ("cut", "stall", "malformed") and (text is None or len(text.split()) < 8):
            text = "one two three four five six seven eight nine ten"
        seq = chunks(str(body.get("model")), text, tools, body)
        if b.startswith("slow-"):
            await asyncio.sleep(int(b[5:] or 0) / 1000.0)
        for i, c in enumerate(seq):
            if b == "cut" and i == 4:
                raise provider_error(
                    "upstream stream ended before the answer was complete",
                    status=None,
                    code="stream_cut",
                )
            if b == "stall" and i == 4:
                await asyncio.sleep(self.stall_s)
            if b == "malformed" and i == 2:
                raise provider_error(
                    "upstream sent a chunk that is not valid JSON",
                    status=None,
                    code="malformed_chunk",
                    retryable=False,
                )
            yield c

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Deterministic 8-dimensional vectors from a hash of each input."""
        import hashlib

        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        tokens = 0
        for i, item in enumerate(items):
            s = item if isinstance(item, str) else orjson.dumps(item).decode()
            tokens += count_tokens(s)
            h = hashlib.sha256(s.encode()).digest()
            vec = [(h[k % 32] - 127.5) / 127.5 for k in range(int(body.get("dimensions") or 8))]
            data.append({"object": "embedding", "embedding": vec, "index": i})
        return {
            "object": "list",
            "data": data,
            "model": str(body.get("model")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
