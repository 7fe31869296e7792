"""Agent steps read from whatever the caller has: a stored Trace, spans, LlmCall views,
OpenAI-style chat messages, or plain step dicts.

Evaluators that look at agent behaviour (TaskCompletion) work on this one flat shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.core.spans import LlmCall, Message, Span, SpanStatus, Trace
from keel.otlp.dialects import to_llm_call


@dataclass
class Step:
    """One agent step: an LLM turn, a tool call with its result, or a retrieval."""

    kind: str  # "llm" | "tool" | "retrieval" | "other"
    name: str | None = None
    text: str | None = None  # the model's output text for llm steps
    arguments: Any = None
    result: Any = None
    error: str | None = None
    inputs: list[str] = field(default_factory=list)  # texts the step read (for "result used")


def _msg_dict(m: Any) -> dict[str, Any]:
    if isinstance(m, Message):
        return m.model_dump()
    if hasattr(m, "model_dump"):
        return dict(m.model_dump())
    return dict(m)


def _content_text(c: Any) -> str | None:
    if c is None or isinstance(c, str):
        return c
    if isinstance(c, list):
        return " ".join(p.get("text", "") for p in c if isinstance(p, Mapping))
    return str(c)


def steps_from_messages(messages: Iterable[Any]) -> list[Step]:
    """Steps from an OpenAI-style message list (assistant tool_calls + ``tool`` results)."""
    steps: list[Step] = []
    pending: dict[str, Step] = {}
    seen_inputs: list[str] = []
    for raw in messages:
        m = _msg_dict(raw)
        role = m.get("role")
        text = _content_text(m.get("content"))
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if text:
                steps.append(Step("llm", text=text, inputs=list(seen_inputs)))
            for c in calls:
                fn = c.get("function") if isinstance(c.get("function"), Mapping) else c
                st = Step(
                    "tool",
                    name=fn.get("name"),
                    arguments=fn.get("arguments"),
                    result=c.get("result"),
                )
                steps.append(st)
                if c.get("id"):
                    pending[str(c["id"])] = st
        elif role == "tool":
            found = pending.get(str(m.get("tool_call_id"))) if m.get("tool_call_id") else None
            if found is None:
                found = Step("tool", name=m.get("name"))
                steps.append(found)
            found.result = text
            if text:
                seen_inputs.append(text)
        elif text:
            seen_inputs.append(text)
    return steps


def steps_from_llm_call(call: LlmCall, *, span: Span | None = None) -> list[Step]:
    """Steps from one LlmCall view (an LLM turn, its tool calls, a tool execution)."""
    err = call.error_type
    if span is not None and span.status == SpanStatus.ERROR:
        err = err or span.status_message or "error"
    op = (call.operation or "").lower()
    if op in ("execute_tool", "tool") or (call.tool_name and not call.output_messages):
        result = call.tool_calls[0].result if call.tool_calls else call.output_text
        args = call.tool_calls[0].arguments if call.tool_calls else None
        return [
            Step(
                "tool",
                name=call.tool_name or (call.tool_calls[0].name if call.tool_calls else None),
                arguments=args,
                result=result,
                error=err,
            )
        ]
    if op in ("retrieval", "retrieve"):
        return [Step("retrieval", result=[d.content for d in call.documents], error=err)]
    inputs = [
        m.content for m in call.input_messages if m.content and m.role in ("tool", "user", "system")
    ]
    out: list[Step] = [
        Step(
            "llm",
            name=call.response_model or call.request_model,
            text=call.output_text,
            error=err,
            inputs=inputs,
        )
    ]
    out.extend(
        Step("tool", name=tc.name, arguments=tc.arguments, result=tc.result)
        for tc in call.tool_calls
    )
    return out


def steps_from_trace(trace: Any) -> list[Step]:
    """Steps from a Trace, a list of spans / LlmCalls / messages / step dicts."""
    if isinstance(trace, Trace):
        items: list[Any] = sorted(trace.spans, key=lambda s: s.start_time_ns)
    elif isinstance(trace, Mapping) and "spans" in trace:
        return steps_from_trace(Trace.model_validate(trace))
    else:
        items = list(trace)
    if (items and all(isinstance(i, Mapping) and "role" in i for i in items)) or (
        items and all(isinstance(i, Message) for i in items)
    ):
        return steps_from_messages(items)
    steps: list[Step] = []
    for it in items:
        if isinstance(it, Span):
            call = to_llm_call(it)
            if call is None:
                if it.status == SpanStatus.ERROR:
                    steps.append(Step("other", name=it.name, error=it.status_message or "error"))
                continue
            steps.extend(steps_from_llm_call(call, span=it))
        elif isinstance(it, LlmCall):
            steps.extend(steps_from_llm_call(it))
        elif isinstance(it, Step):
            steps.append(it)
        elif isinstance(it, Mapping):
            kind = str(
                it.get("kind")
                or it.get("type")
                or ("tool" if "tool" in it or "result" in it else "llm")
            )
            steps.append(
                Step(
                    kind="tool" if kind in ("tool", "tool_call", "function") else kind,
                    name=it.get("name") or it.get("tool"),
                    text=_content_text(
                        it.get("text") or it.get("output")
                        if kind not in ("tool", "tool_call", "function")
                        else None
                    ),
                    arguments=it.get("arguments") or it.get("input"),
                    result=it.get("result")
                    if "result" in it
                    else (it.get("output") if kind in ("tool", "tool_call", "function") else None),
                    error=it.get("error"),
                )
            )
    return steps


def final_answer(steps: list[Step]) -> str | None:
    """The last non-empty LLM text among the steps."""
    for st in reversed(steps):
        if st.kind == "llm" and st.text and st.text.strip():
            return st.text
    return None
