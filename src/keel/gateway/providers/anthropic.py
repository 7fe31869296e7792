"""Anthropic Messages API upstream, translated to and from OpenAI's Chat Completions shape.

Pure functions do the translation (``to_anthropic_request``, ``from_anthropic_response``,
``StreamTranslator``); :class:`AnthropicProvider` only moves bytes. Mapping follows
reference/conventions.md §5: system messages go top level, ``tool`` messages become
``tool_result`` blocks in a user turn, ``arguments`` strings become ``input`` objects, stop
reasons map to OpenAI finish reasons, and ``prompt_tokens`` includes cache reads and writes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, provider_error
from keel.gateway.providers.http import (
    HttpClient,
    Timeouts,
    classify_error,
    client_timeout,
    connection_error,
    post_json,
    stream_event_json,
)
from keel.gateway.providers.openai import read_sse

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def _blocks(content: Any) -> list[Body]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[Body] = []
    for p in content:
        if not isinstance(p, dict):
            continue
        t = p.get("type")
        if t == "text":
            out.append({"type": "text", "text": p.get("text", "")})
        elif t == "image_url":
            url = (p.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                out.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            else:
                out.append({"type": "image", "source": {"type": "url", "url": url}})
    return out


def _parse_args(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        v = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return v if isinstance(v, dict) else {"value": v}


def to_anthropic_request(body: Body, model: str, *, stream: bool) -> Body:
    """An Anthropic Messages request for an OpenAI Chat Completions body."""
    system: list[str] = []
    messages: list[Body] = []

    def push(role: str, blocks: list[Body]) -> None:
        if not blocks:
            return
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in body.get("messages") or ():
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content")))
        elif role == "user":
            push("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": fn.get("name"),
                        "input": _parse_args(fn.get("arguments")),
                    }
                )
            push("assistant", blocks)
        elif role == "tool":
            push(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id"),
                        "content": _text_of(m.get("content")),
                    }
                ],
            )
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        schema = (fmt.get("json_schema") or {}).get("schema")
        hint = "Respond with a single JSON object and nothing else."
        if schema:
            hint += " It must match this JSON Schema: " + orjson.dumps(schema).decode()
        system.append(hint)
    out: Body = {
        "model": model,
        "max_tokens": int(
            body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        ),
        "messages": messages,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    for k in ("temperature", "top_p"):
        if body.get(k) is not None:
            out[k] = body[k]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": (t.get("function") or {}).get("name"),
                "description": (t.get("function") or {}).get("description", ""),
                "input_schema": (t.get("function") or {}).get("parameters")
                or {"type": "object", "properties": {}},
            }
            for t in tools
            if t.get("type", "function") == "function"
        ]
    choice = body.get("tool_choice")
    tc: Body | None = None
    if choice == "auto":
        tc = {"type": "auto"}
    elif choice == "required":
        tc = {"type": "any"}
    elif choice == "none":
        tc = {"type": "none"}
    elif isinstance(choice, dict):
        tc = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    if body.get("parallel_tool_calls") is False and tools:
        tc = tc or {"type": "auto"}
        tc["disable_parallel_tool_use"] = True
    if tc is not None and tools:
        out["tool_choice"] = tc
    user = body.get("safety_identifier") or body.get("user")
    if user:
        out["metadata"] = {"user_id": str(user)}
    if stream:
        out["stream"] = True
    return out


def usage_from_anthropic(u: Body | None) -> Body:
    """OpenAI usage from Anthropic usage (prompt tokens include cache reads and writes)."""
    u = u or {}
    inp = int(u.get("input_tokens") or 0)
    cache_read = int(u.get("cache_read_input_tokens") or 0)
    cache_write = int(u.get("cache_creation_input_tokens") or 0)
    out = int(u.get("output_tokens") or 0)
    prompt = inp + cache_read + cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    }


def from_anthropic_response(msg: Body) -> Body:
    """An OpenAI ``chat.completion`` for an Anthropic message."""
    text: list[str] = []
    tool_calls: list[Body] = []
    for b in msg.get("content") or ():
        if b.get("type") == "text":
            text.append(b.get("text", ""))
        elif b.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {
                        "name": b.get("name"),
                        "arguments": orjson.dumps(b.get("input") or {}).decode(),
                    },
                }
            )
    message: Body = {
        "role": "assistant",
        "content": "".join(text) if text else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + str(msg.get("id", "")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": STOP_REASONS.get(str(msg.get("stop_reason")), "stop"),
            }
        ],
        "usage": usage_from_anthropic(msg.get("usage")),
    }


class StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out (one instance per stream)."""

    def __init__(self, model: str) -> None:
        self.id = "chatcmpl-anthropic"
        self.model = model
        self.created = int(time.time())
        self.usage: Body = {}
        self.tool_index: dict[int, int] = {}
        self.finished = False
        self.done = False

    def _chunk(self, delta: Body, finish: str | None = None) -> Body:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, event: str | None, data: Body) -> list[Body]:
        """Chunks for one event (possibly none). Raises ProviderError on an ``error`` event."""
        etype = data.get("type") or event
        if etype == "message_start":
            m = data.get("message") or {}
            self.id = "chatcmpl-" + str(m.get("id", "anthropic"))
            self.model = m.get("model") or self.model
            self.usage = dict(m.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if etype == "content_block_start":
            b = data.get("content_block") or {}
            if b.get("type") == "tool_use":
                idx = len(self.tool_index)
                self.tool_index[int(data.get("index", 0))] = idx
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": idx,
                                    "id": b.get("id"),
                                    "type": "function",
                                    "function": {"name": b.get("name"), "arguments": ""},
                                }
                            ]
                        }
                    )
                ]
            if b.get("type") == "text" and b.get("text"):
                return [self._chunk({"content": b["text"]})]
            return []
        if etype == "content_block_delta":
            d = data.get("delta") or {}
            if d.get("type") == "text_delta":
                return [self._chunk({"content": d.get("text", "")})]
            if d.get("type") == "input_json_delta":
                idx = self.tool_index.get(int(data.get("index", 0)), 0)
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {"index": idx, "function": {"arguments": d.get("partial_json", "")}}
                            ]
                        }
                    )
                ]
            return []
        if etype == "message_delta":
            self.usage.update(data.get("usage") or {})
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.finished = True
                return [self._chunk({}, STOP_REASONS.get(reason, "stop"))]
            return []
        if etype == "message_stop":
            self.done = True
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage_from_anthropic(self.usage)
            return [usage_chunk]
        if etype == "error":
            err = data.get("error") or {}
            et = str(err.get("type", ""))
            raise provider_error(
                f"anthropic stream error: {str(err.get('message', et))[:300]}",
                status=None,
                code="overloaded" if et == "overloaded_error" else "upstream_error",
                retryable=et in ("overloaded_error", "api_error", "rate_limit_error"),
            )
        return []  # ping, content_block_stop, unknown


class AnthropicProvider:
    """Anthropic's ``/v1/messages``."""

    kind = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        base_url: str = "https://api.anthropic.com/v1",
        api_key: str | None,
        http: HttpClient,
        models: list[str] | None = None,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.http = http
        self._models = list(models or [])
        self._headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        self._headers.update(headers or {})
        if api_key:
            self._headers["x-api-key"] = api_key
        self.timeouts = timeouts or Timeouts()
        self._t_once = client_timeout(self.timeouts, stream=False)
        self._t_stream = client_timeout(self.timeouts, stream=True)

    def __repr__(self) -> str:
        return f"AnthropicProvider({self.name!r}, base_url={self.base_url!r})"

    def models(self) -> list[str]:
        """Configured model names."""
        return list(self._models)

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """One message, as a chat completion."""
        model = str(body.get("model") or "")
        n = int(body.get("n") or 1)
        if n > 1:
            raise provider_error(
                "anthropic does not support n > 1", status=400, code="invalid_request"
            )
        payload = orjson.dumps(to_anthropic_request(body, model, stream=False))
        msg = await post_json(
            self.http, f"{self.base_url}/messages", self._headers, payload, self._t_once, self.name
        )
        if not isinstance(msg, dict) or msg.get("type") == "error":
            raise provider_error(f"{self.name} answered with an error body", status=502)
        return from_anthropic_response(msg)

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Translated chunks; the stream must end with ``message_stop`` or it is an error."""
        model = str(body.get("model") or "")
        payload = orjson.dumps(to_anthropic_request(body, model, stream=True))
        tr = StreamTranslator(model)
        started = False
        try:
            resp = await self.http.session.post(
                f"{self.base_url}/messages",
                data=payload,
                headers=self._headers,
                timeout=self._t_stream,
            )
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise connection_error(e, self.name) from None
        try:
            if resp.status >= 400:
                raise classify_error(resp.status, resp.headers, await resp.read(), self.name)
            tail = [False]
            async for event, data in read_sse(resp, tail):
                doc = stream_event_json(data, self.name, started=started)
                if doc is None:
                    continue
                for c in tr.feed(event, doc):
                    started = True
                    yield c
                if tr.finished:
                    tail[0] = True
                if tr.done:
                    break
            if not tr.finished:
                raise provider_error(
                    f"{self.name} ended the stream before the answer was complete",
                    status=None,
                    code="stream_cut",
                    retryable=not started,
                )
            if not tr.done:  # finished but no message_stop: still report usage
                usage_chunk = tr._chunk({})
                usage_chunk["choices"] = []
                usage_chunk["usage"] = usage_from_anthropic(tr.usage)
                yield usage_chunk
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise connection_error(e, self.name, started=started) from None
        finally:
            resp.release()

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Anthropic serves no embeddings."""
        raise provider_error(
            "anthropic does not serve embeddings", status=400, code="invalid_request"
        )
