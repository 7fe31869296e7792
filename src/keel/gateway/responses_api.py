"""OpenAI's Responses API (``POST /v1/responses``) as a pure translation onto Chat Completions.

A Responses request becomes a Chat Completions body (:func:`to_chat`), which then goes through
the unchanged gateway pipeline (routing, keys, limits and budgets, caches, fallbacks, spans);
the ``chat.completion`` answer becomes a ``response`` object (:func:`from_chat`) and a stream of
``chat.completion.chunk`` dicts becomes the typed Responses events (:class:`StreamTranslator`).

Stateless: nothing is stored, so ``previous_response_id``, ``conversation``, ``background`` and
``store: true`` are refused with a 400 that says so (send the whole conversation as ``input``
items instead). Only function tools are supported.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import orjson

from keel.errors import InvalidInputError, KeelError

Body = dict[str, Any]

_STATEFUL = (
    ("previous_response_id", "previous_response_id"),
    ("conversation", "conversation"),
)

# Request fields copied to the chat body unchanged.
_PASSTHROUGH = (
    "model",
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "service_tier",
    "prompt_cache_key",
    "seed",
    "variables",  # Keel prompt routes
)

_ids = itertools.count(1)
_PID = os.getpid()


def _new_id(prefix: str) -> str:
    return f"{prefix}_{_PID:x}{time.time_ns():x}{next(_ids):x}"


def _bad(message: str, param: str | None = None) -> InvalidInputError:
    return InvalidInputError(
        message, code="invalid_request", details={"param": param} if param else None
    )


# -- request --------------------------------------------------------------------------------
def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") in ("input_text", "output_text", "text"):
                parts.append(str(p.get("text") or ""))
            elif isinstance(p, dict) and p.get("type") == "refusal":
                parts.append(str(p.get("refusal") or ""))
            else:
                raise _bad(f"unsupported content part in {param}", param)
        return "".join(parts)
    raise _bad(f"{param} must be a string or a list of content parts", param)


def _user_content(content: Any, param: str) -> Any:
    """Chat content for a user/system message (text and image parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{param} must be a string or a list of content parts", param)
    if all(isinstance(p, dict) and p.get("type") in ("input_text", "text") for p in content):
        return "".join(str(p.get("text") or "") for p in content)
    out: list[Body] = []
    for p in content:
        t = p.get("type") if isinstance(p, dict) else None
        if t in ("input_text", "text"):
            out.append({"type": "text", "text": str(p.get("text") or "")})
        elif t == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str):
                raise _bad(f"{param}: input_image needs an image_url (file_id is not supported)")
            img: Body = {"url": url}
            if p.get("detail"):
                img["detail"] = p["detail"]
            out.append({"type": "image_url", "image_url": img})
        else:
            raise _bad(f"unsupported content part type {t!r} in {param}", param)
    return out


def _messages(inp: Any, instructions: Any) -> list[Body]:
    msgs: list[Body] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("'instructions' must be a string", "instructions")
        if instructions:
            msgs.append({"role": "system", "content": instructions})
    if isinstance(inp, str):
        msgs.append({"role": "user", "content": inp})
        return msgs
    if not isinstance(inp, list) or not inp:
        raise _bad("'input' must be a string or a non-empty list of items", "input")
    for i, item in enumerate(inp):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{param} must be an object", param)
        t = item.get("type") or ("message" if "role" in item else None)
        if t == "message":
            role = item.get("role")
            if role in ("user", "system", "developer"):
                msgs.append({"role": role, "content": _user_content(item.get("content"), param)})
            elif role == "assistant":
                msgs.append({"role": "assistant", "content": _text_of(item.get("content"), param)})
            else:
                raise _bad(f"{param}: unknown role {role!r}", param)
        elif t == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id"),
                "type": "function",
                "function": {
                    "name": item.get("name"),
                    "arguments": item.get("arguments") or "",
                },
            }
            if not call["id"] or not isinstance(item.get("name"), str):
                raise _bad(f"{param}: a function_call needs call_id and name", param)
            last = msgs[-1] if msgs else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif t == "function_call_output":
            if not item.get("call_id"):
                raise _bad(f"{param}: a function_call_output needs call_id", param)
            out = item.get("output")
            if not isinstance(out, str):
                out = _text_of(out, param) if isinstance(out, list) else orjson.dumps(out).decode()
            msgs.append({"role": "tool", "tool_call_id": item["call_id"], "content": out})
        elif t == "reasoning":
            continue  # reasoning items of an earlier answer carry nothing a chat model takes
        elif t == "item_reference":
            raise _bad(f"{param}: item references need stored responses, which Keel does not keep")
        else:
            raise _bad(f"{param}: unsupported input item type {t!r}", param)
    return msgs


def _tools(tools: Any) -> list[Body]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise _bad(
                f"tools[{i}]: only function tools are supported by the gateway (got {kind!r})",
                f"tools[{i}]",
            )
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise _bad(f"tools[{i}]: a function tool needs a name", f"tools[{i}]")
        fn: Body = {"name": t["name"]}
        for k in ("description", "parameters", "strict"):
            if t.get(k) is not None:
                fn[k] = t[k]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(tc: Any) -> Any:
    if tc is None or isinstance(tc, str):
        return tc
    if isinstance(tc, dict) and tc.get("type") == "function" and tc.get("name"):
        return {"type": "function", "function": {"name": tc["name"]}}
    if isinstance(tc, dict) and tc.get("type") == "allowed_tools":
        return tc.get("mode") or "auto"
    raise _bad("'tool_choice' must be none, auto, required or a function", "tool_choice")


def _response_format(fmt: Any) -> Body | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("'text.format' must be an object", "text.format")
    t = fmt.get("type")
    if t == "text":
        return None
    if t == "json_object":
        return {"type": "json_object"}
    if t == "json_schema":
        if not isinstance(fmt.get("schema"), dict) or not fmt.get("name"):
            raise _bad("'text.format' json_schema needs a name and a schema", "text.format")
        js: Body = {"name": fmt["name"], "schema": fmt["schema"]}
        for k in ("strict", "description"):
            if fmt.get(k) is not None:
                js[k] = fmt[k]
        return {"type": "json_schema", "json_schema": js}
    raise _bad(f"unsupported text.format type {t!r}", "text.format")


def to_chat(body: Any) -> Body:
    """The Chat Completions body for a Responses request (raises a 400 for what cannot map)."""
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object")
    for field, name in _STATEFUL:
        if body.get(field) is not None:
            raise _bad(
                f"'{name}' is not supported: Keel's Responses API is stateless and stores no "
                "responses; send the whole conversation as 'input' items instead",
                name,
            )
    if body.get("store") is True:
        raise _bad(
            "'store: true' is not supported: Keel's Responses API is stateless; omit 'store' "
            "or set it to false (the gateway's span records the call)",
            "store",
        )
    if body.get("background"):
        raise _bad("'background' responses are not supported by the gateway", "background")
    if body.get("prompt") is not None:
        raise _bad(
            "stored-prompt references are not supported here; use a Keel prompt route "
            "(model=<route>, extra_body={'variables': ...})",
            "prompt",
        )
    if "input" not in body and "variables" not in body:
        raise _bad("'input' is required", "input")
    chat: Body = {k: body[k] for k in _PASSTHROUGH if body.get(k) is not None}
    if "input" in body:
        chat["messages"] = _messages(body.get("input"), body.get("instructions"))
    else:  # a prompt route renders the messages from 'variables'
        chat["messages"] = []
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    tc = _tool_choice(body.get("tool_choice"))
    if tc is not None:
        chat["tool_choice"] = tc
    mot = body.get("max_output_tokens")
    if mot is not None:
        if not isinstance(mot, int) or isinstance(mot, bool) or mot < 1:
            raise _bad("'max_output_tokens' must be a positive integer", "max_output_tokens")
        chat["max_completion_tokens"] = mot
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict):
            raise _bad("'text' must be an object", "text")
        rf = _response_format(text.get("format"))
        if rf is not None:
            chat["response_format"] = rf
        if text.get("verbosity") is not None:
            chat["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    return chat


# -- response -------------------------------------------------------------------------------
def usage_of(u: Body | None) -> Body | None:
    """A Responses ``usage`` block from a Chat Completions one."""
    if not u:
        return None
    inp = int(u.get("prompt_tokens") or 0)
    out = int(u.get("completion_tokens") or 0)
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": int(pd.get("cached_tokens") or 0)},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": int(cd.get("reasoning_tokens") or 0)},
        "total_tokens": int(u.get("total_tokens") or inp + out),
    }


def _format_of(req: Body) -> Body:
    text = req.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return {"format": fmt if isinstance(fmt, dict) else {"type": "text"}}


def skeleton(req: Body, rid: str, created: int, model: str, status: str) -> Body:
    """A ``response`` object without output (echoing the request's settings)."""
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": req.get("reasoning"),
        "store": False,
        "temperature": req.get("temperature"),
        "text": _format_of(req),
        "tool_choice": req.get("tool_choice") or "auto",
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p"),
        "truncation": req.get("truncation") or "disabled",
        "usage": None,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def _message_item(text: str, status: str = "completed", item_id: str | None = None) -> Body:
    return {
        "type": "message",
        "id": item_id or _new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(call: Body, status: str = "completed", item_id: str | None = None) -> Body:
    fn = call.get("function") or {}
    return {
        "type": "function_call",
        "id": item_id or _new_id("fc"),
        "call_id": call.get("id") or _new_id("call"),
        "name": fn.get("name") or "",
        "arguments": fn.get("arguments") or "",
        "status": status,
    }


def _finish(resp: Body, finish: str | None) -> None:
    if finish == "length":
        resp["status"] = "incomplete"
        resp["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        resp["status"] = "incomplete"
        resp["incomplete_details"] = {"reason": "content_filter"}
    else:
        resp["status"] = "completed"


def from_chat(req: Body, chat: Body) -> Body:
    """The ``response`` object for a ``chat.completion`` (first choice)."""
    model = str(chat.get("model") or req.get("model"))
    out = skeleton(req, _new_id("resp"), int(chat.get("created") or time.time()), model, "")
    choice = (chat.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    status = "incomplete" if choice.get("finish_reason") in ("length", "content_filter") else None
    item_status = status or "completed"
    if msg.get("content") or (msg.get("refusal") is None and not msg.get("tool_calls")):
        out["output"].append(_message_item(msg.get("content") or "", item_status))
    if msg.get("refusal"):
        out["output"].append(
            {
                "type": "message",
                "id": _new_id("msg"),
                "status": item_status,
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": msg["refusal"]}],
            }
        )
    for call in msg.get("tool_calls") or ():
        out["output"].append(_call_item(call))
    _finish(out, choice.get("finish_reason"))
    out["usage"] = usage_of(chat.get("usage"))
    return out


def error_object(e: BaseException) -> Body:
    """The ``error`` of a failed response."""
    if isinstance(e, KeelError):
        return {"code": e.code, "message": e.message}
    return {"code": "server_error", "message": "internal error while streaming"}


class StreamTranslator:
    """Turns ``chat.completion.chunk`` dicts into Responses stream events (dicts with ``type``
    and an increasing ``sequence_number``)."""

    def __init__(self, req: Body) -> None:
        self.req = req
        self.seq = 0
        self.rid = _new_id("resp")
        self.created = int(time.time())
        self.model = str(req.get("model"))
        self.output: list[Body] = []
        self.usage: Body | None = None
        self.finish: str | None = None
        self._text: list[str] | None = None  # the open message item's text
        self._msg_id = ""
        self._calls: dict[int, tuple[int, Body]] = {}  # chat tool index -> (output index, item)
        self._open_call: int | None = None

    def _ev(self, type_: str, **kw: Any) -> Body:
        ev = {"type": type_, "sequence_number": self.seq, **kw}
        self.seq += 1
        return ev

    def _response(self, status: str) -> Body:
        r = skeleton(self.req, self.rid, self.created, self.model, status)
        r["output"] = list(self.output)
        return r

    def start(self) -> list[Body]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._ev("response.created", response=self._response("in_progress")),
            self._ev("response.in_progress", response=self._response("in_progress")),
        ]

    # -- items
    def _open_text(self) -> list[Body]:
        self._msg_id = _new_id("msg")
        self._text = []
        item = {
            "type": "message",
            "id": self._msg_id,
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        idx = len(self.output)
        self.output.append(item)
        return [
            self._ev("response.output_item.added", output_index=idx, item=item),
            self._ev(
                "response.content_part.added",
                item_id=self._msg_id,
                output_index=idx,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            ),
        ]

    def _close_text(self, status: str = "completed") -> list[Body]:
        if self._text is None:
            return []
        text = "".join(self._text)
        self._text = None
        idx = next(i for i, it in enumerate(self.output) if it.get("id") == self._msg_id)
        item = _message_item(text, status, self._msg_id)
        self.output[idx] = item
        part = item["content"][0]
        return [
            self._ev(
                "response.output_text.done",
                item_id=self._msg_id,
                output_index=idx,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._ev(
                "response.content_part.done",
                item_id=self._msg_id,
                output_index=idx,
                content_index=0,
                part=part,
            ),
            self._ev("response.output_item.done", output_index=idx, item=item),
        ]

    def _close_call_args(self) -> list[Body]:
        if self._open_call is None:
            return []
        idx, item = self._calls[self._open_call]
        self._open_call = None
        item["status"] = "completed"
        return [
            self._ev(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=idx,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._ev("response.output_item.done", output_index=idx, item=dict(item)),
        ]

    def chunk(self, c: Body) -> list[Body]:
        """The events for one chunk (only the first choice is translated)."""
        evs: list[Body] = []
        if c.get("model"):
            self.model = str(c["model"])
        if c.get("usage"):
            self.usage = c["usage"]
        for ch in c.get("choices") or ():
            if ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._text is None:
                    evs += self._close_call_args()
                    evs += self._open_text()
                assert self._text is not None
                self._text.append(text)
                idx = len(self.output) - 1
                evs.append(
                    self._ev(
                        "response.output_text.delta",
                        item_id=self._msg_id,
                        output_index=idx,
                        content_index=0,
                        delta=text,
                        logprobs=[],
                    )
                )
            for tc in delta.get("tool_calls") or ():
                ti = tc.get("index", 0)
                fn = tc.get("function") or {}
                if ti not in self._calls:
                    evs += self._close_text()
                    evs += self._close_call_args()
                    item = _call_item(
                        {"id": tc.get("id"), "function": {"name": fn.get("name")}},
                        status="in_progress",
                    )
                    idx = len(self.output)
                    self.output.append(item)
                    self._calls[ti] = (idx, item)
                    self._open_call = ti
                    evs.append(
                        self._ev("response.output_item.added", output_index=idx, item=dict(item))
                    )
                idx, item = self._calls[ti]
                if fn.get("name") and not item["name"]:
                    item["name"] = fn["name"]
                if fn.get("arguments"):
                    item["arguments"] += fn["arguments"]
                    evs.append(
                        self._ev(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=idx,
                            delta=fn["arguments"],
                        )
                    )
            if ch.get("finish_reason"):
                self.finish = ch["finish_reason"]
        return evs

    def end(self) -> list[Body]:
        """Close what is open; ``response.completed`` (or ``response.incomplete``)."""
        incomplete = self.finish in ("length", "content_filter")
        evs = self._close_text("incomplete" if incomplete else "completed")
        evs += self._close_call_args()
        r = self._response("completed")
        _finish(r, self.finish)
        r["usage"] = usage_of(self.usage)
        kind = "response.incomplete" if r["status"] == "incomplete" else "response.completed"
        evs.append(self._ev(kind, response=r))
        return evs

    def fail(self, e: BaseException) -> list[Body]:
        """An ``error`` event and the terminal ``response.failed``."""
        err = error_object(e)
        r = self._response("failed")
        r["error"] = err
        r["usage"] = usage_of(self.usage)
        return [
            self._ev("error", code=err["code"], message=err["message"], param=None),
            self._ev("response.failed", response=r),
        ]


def sse(ev: Body) -> bytes:
    """One Responses SSE frame (``event:`` line plus ``data:``)."""
    return b"event: " + ev["type"].encode() + b"\ndata: " + orjson.dumps(ev) + b"\n\n"
