"""Small evaluators and targets for runner tests."""

from __future__ import annotations

import asyncio
from typing import Any

from keel.core.datasets import Row
from keel.evals.base import EvalResult, Evaluator
from keel.evals.runner import TargetOutput
from keel.gateway.provider import provider_error


class SpanCount(Evaluator):
    """1.0 when the captured trace has at least ``min_spans`` spans."""

    name = "span_count"
    version = "2"
    required_inputs = frozenset({"trace"})
    default_threshold = 1.0

    def __init__(self, *, min_spans: int = 2, **kw: Any) -> None:
        super().__init__(**kw)
        self.min_spans = min_spans

    def _evaluate(self, **inputs: Any) -> EvalResult:
        n = len(inputs["trace"])
        return EvalResult(
            value=1.0 if n >= self.min_spans else 0.0, reason=f"{n} spans", details={"n": n}
        )


class ScriptTarget:
    """A target whose behaviour per row is scripted; counts calls and in-flight peak."""

    name = "script"
    provider_key = "script"
    cacheable = True

    def __init__(
        self, *, fail: dict[str, list[Exception]] | None = None, delay: float = 0.0
    ) -> None:
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.delay = delay
        self.calls: list[str] = []
        self.inflight = 0
        self.peak = 0

    def prepare(self, row: Row, repeat: int) -> dict[str, Any]:
        return {"input": row.input}

    async def call(self, row: Row, request: dict[str, Any]) -> TargetOutput:
        self.calls.append(row.id)
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            errs = self.fail.get(row.id)
            if errs:
                raise errs.pop(0)
            return TargetOutput(output=str(row.input), cost_usd=0.001)
        finally:
            self.inflight -= 1


def retryable() -> Exception:
    return provider_error("upstream 503", status=503)


def fatal() -> Exception:
    return provider_error("bad request", status=400)


def agent_answer(question: str) -> str:
    """A tiny 'agent' that emits an LLM span and a tool span per question."""
    from opentelemetry import trace

    tracer = trace.get_tracer("test.agent")
    with tracer.start_as_current_span("agent.plan") as sp:
        sp.set_attribute("gen_ai.operation.name", "chat")
        sp.set_attribute("gen_ai.request.model", "fake:echo")
        sp.set_attribute("gen_ai.usage.input_tokens", 7)
        sp.set_attribute("gen_ai.usage.output_tokens", 3)
    with tracer.start_as_current_span("tool.lookup"):
        pass
    return question.upper()


async def async_agent(question: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"output": question[::-1], "cost_usd": 0.5}
