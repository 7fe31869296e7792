"""A mock upstream shaped like OpenAI (and Anthropic, and Azure) whose model name picks a fault.

For the fault suite, demos and benchmarks: ``python -m keel.gateway.mockupstream --port 9000``.
Behaviours (model name, optionally prefixed ``anything:``): ``echo``, ``text``, ``json``,
``tool``; ``error-<status>[-retry-<s>]`` (always), ``once-<status>[-retry-<s>]`` (the first
request for that model fails, later ones answer), ``down-<ms>`` (503 until ``ms`` after the
first request), ``reset`` (TCP reset before headers), ``silent`` (accepts, never answers),
``slow-<ms>`` (first token late), ``cut`` (stream ends after 5 events, no finish, no
``[DONE]``), ``abort`` (the same with a TCP reset), ``stall-<ms>`` (stops sending mid-stream
for ``ms`` then closes), ``malformed`` (the 10th event is not JSON), ``nodone`` (complete
stream, no ``[DONE]``, connection held open 20 s), ``error-event`` (200 + a stream whose
first event is an error), ``context-length`` and ``content-filter`` (400s shaped like
OpenAI's). Every request is logged in ``app["log"]`` as ``(model, monotonic time)``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from keel.gateway.providers.fake import answer, chunks, completion

LOG_KEY = web.AppKey("log", list)
FIRST_KEY = web.AppKey("first", dict)


def _behaviour(model: str) -> str:
    return model.split(":", 1)[1] if ":" in model else model


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _openai_error(
    status: int, message: str, code: str | None = None, etype: str = "server_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


async def _fault(request: web.Request, model: str, anthropic: bool) -> web.StreamResponse | None:
    """A response for the pre-output faults, or None to answer normally."""
    app = request.app
    b = _behaviour(model)
    model_key = request.path + model
    first = app[FIRST_KEY]
    seen = model_key in first
    first.setdefault(model_key, time.monotonic())
    parts = b.split("-")
    if parts[0] in ("error", "once") and len(parts) >= 2 and parts[1].isdigit():
        if parts[0] == "once" and seen:
            return None
        status = int(parts[1])
        headers = {}
        if len(parts) >= 4 and parts[2] == "retry":
            headers["Retry-After"] = parts[3]
        if anthropic:
            et = {
                529: "overloaded_error",
                429: "rate_limit_error",
                401: "authentication_error",
            }.get(status, "api_error")
            return _json(
                {"type": "error", "error": {"type": et, "message": f"mock {status}"}},
                status,
                headers,
            )
        etype = {429: "rate_limit_error", 401: "invalid_request_error"}.get(status, "server_error")
        return _json(_openai_error(status, f"mock upstream {status}", etype=etype), status, headers)
    if parts[0] == "down" and len(parts) == 2:
        if time.monotonic() - first[model_key] < int(parts[1]) / 1000.0:
            return _json(_openai_error(503, "mock upstream is down"), 503)
        return None
    if b == "reset":
        tr = request.transport
        if tr is not None:
            sock = tr.get_extra_info("socket")
            if sock is not None:
                import socket
                import struct

                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tr.close()
        raise asyncio.CancelledError()
    if b == "silent":
        await asyncio.sleep(3600)
    if b == "context-length":
        if anthropic:
            return _json(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 300000 tokens > 200000 maximum",
                    },
                },
                400,
            )
        return _json(
            _openai_error(
                400,
                "This model's maximum context length is 8192 tokens.",
                "context_length_exceeded",
                "invalid_request_error",
            ),
            400,
        )
    if b == "content-filter":
        return _json(
            _openai_error(
                400,
                "The response was filtered due to the prompt triggering content management policy.",
                "content_filter",
                "invalid_request_error",
            ),
            400,
        )
    return None


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    return resp


async def openai_chat(request: web.Request) -> web.StreamResponse:
    """OpenAI (and Azure) Chat Completions."""
    body = await request.json(loads=orjson.loads)
    model = str(body.get("model") or request.match_info.get("deployment", ""))
    request.app[LOG_KEY].append((model, time.monotonic()))
    b = _behaviour(model)
    fault = await _fault(request, model, anthropic=False)
    if fault is not None:
        return fault
    text, tools = answer(b if b in ("text", "json", "tool") else "echo", body)
    if not body.get("stream"):
        if b.startswith("slow-"):
            await asyncio.sleep(int(b.split("-")[1]) / 1000.0)
        return _json(completion(model, text, tools, body))
    if b in ("cut", "abort", "malformed") or b.startswith("stall"):
        text = " ".join(f"w{i}" for i in range(60))
    seq = chunks(model, text, tools, body)
    if not (body.get("stream_options") or {}).get("include_usage"):
        seq = seq[:-1]
    resp = await _sse(request)
    if b == "error-event":
        await resp.write(
            b"data: "
            + orjson.dumps(
                {
                    "error": {
                        "message": "mock upstream failed",
                        "type": "server_error",
                        "code": "server_error",
                    }
                }
            )
            + b"\n\n"
        )
        await resp.write_eof()
        return resp
    if b.startswith("slow-"):
        await asyncio.sleep(int(b.split("-")[1]) / 1000.0)
    for i, c in enumerate(seq):
        if b in ("cut", "abort") and i == 5:
            if b == "abort" and request.transport is not None:
                request.transport.abort()
                raise asyncio.CancelledError()
            await resp.write_eof()
            return resp
        if b.startswith("stall") and i == 3:
            await asyncio.sleep(int(b.split("-")[1]) / 1000.0 if "-" in b else 30.0)
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError()
        if b == "malformed" and i == 9:
            await resp.write(b'data: {"id": "broken", "choices": [\n\n')
            continue
        await resp.write(b"data: " + orjson.dumps(c) + b"\n\n")
    if b == "nodone":
        await asyncio.sleep(20)
        return resp
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _anthropic_events(
    model: str, text: str | None, tools: list[dict[str, Any]] | None, body: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    ev: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 4,
                        "cache_creation_input_tokens": 2,
                    },
                },
            },
        )
    ]
    idx = 0
    if text is not None:
        ev.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": idx,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        for w in text.split(" "):
            ev.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": idx,
                        "delta": {"type": "text_delta", "text": w + " "},
                    },
                )
            )
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
        idx += 1
    for tc in tools or ():
        ev.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": idx,
                    "content_block": {
                        "type": "tool_use",
                        "id": tc["id"],
                        "name": tc["function"]["name"],
                        "input": {},
                    },
                },
            )
        )
        args = tc["function"]["arguments"]
        for k in range(0, len(args), 7):
            ev.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": idx,
                        "delta": {"type": "input_json_delta", "partial_json": args[k : k + 7]},
                    },
                )
            )
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
        idx += 1
    ev.append(("ping", {"type": "ping"}))
    ev.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tools else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 7},
            },
        )
    )
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    """Anthropic Messages."""
    body = await request.json(loads=orjson.loads)
    model = str(body.get("model"))
    request.app[LOG_KEY].append((model, time.monotonic()))
    if request.headers.get("anthropic-version") is None or "max_tokens" not in body:
        return _json(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "missing anthropic-version or max_tokens",
                },
            },
            400,
        )
    b = _behaviour(model)
    fault = await _fault(request, model, anthropic=True)
    if fault is not None:
        return fault
    last = ""
    for m in body.get("messages") or ():
        if m.get("role") == "user":
            for blk in m.get("content") or ():
                if blk.get("type") == "text":
                    last = blk.get("text", "")
                elif blk.get("type") == "tool_result":
                    last = "tool said: " + str(blk.get("content"))
    tools: list[dict[str, Any]] | None = None
    text: str | None = last
    if b == "tool" and body.get("tools"):
        tools = [
            {
                "id": "toolu_mock",
                "type": "function",
                "function": {
                    "name": body["tools"][0]["name"],
                    "arguments": orjson.dumps({"query": last}).decode(),
                },
            }
        ]
        text = None
    if b == "system":
        text = str(body.get("system"))
    if not body.get("stream"):
        content: list[dict[str, Any]] = []
        if text is not None:
            content.append({"type": "text", "text": text})
        for tc in tools or ():
            content.append(
                {
                    "type": "tool_use",
                    "id": tc["id"],
                    "name": tc["function"]["name"],
                    "input": orjson.loads(tc["function"]["arguments"]),
                }
            )
        return _json(
            {
                "id": "msg_mock",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if tools else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 7,
                    "cache_read_input_tokens": 4,
                    "cache_creation_input_tokens": 2,
                },
            }
        )
    if b in ("cut", "abort"):
        text = " ".join(f"w{i}" for i in range(60))
    resp = await _sse(request)
    for i, (name, data) in enumerate(_anthropic_events(model, text, tools, body)):
        if b in ("cut", "abort") and i == 5:
            await resp.write_eof()
            return resp
        if b == "overloaded-mid" and i == 3:
            await resp.write(
                b"event: error\ndata: "
                + orjson.dumps(
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    }
                )
                + b"\n\n"
            )
            await resp.write_eof()
            return resp
        await resp.write(f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n")
    await resp.write_eof()
    return resp


async def embeddings(request: web.Request) -> web.Response:
    """OpenAI Embeddings."""
    body = await request.json(loads=orjson.loads)
    model = str(body.get("model"))
    request.app[LOG_KEY].append((model, time.monotonic()))
    fault = await _fault(request, model, anthropic=False)
    if fault is not None:
        return fault  # type: ignore[return-value]
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    data = [
        {"object": "embedding", "embedding": [float(len(str(x))), 1.0, 0.5], "index": i}
        for i, x in enumerate(items)
    ]
    return _json(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": len(items), "total_tokens": len(items)},
        }
    )


def make_app() -> web.Application:
    """The mock upstream app."""
    app = web.Application()
    app[LOG_KEY] = []
    app[FIRST_KEY] = {}
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", openai_chat)
    app.router.add_post("/v1/messages", anthropic_messages)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


def main() -> None:
    """Run the mock upstream."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    a = ap.parse_args()
    web.run_app(make_app(), host=a.host, port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
