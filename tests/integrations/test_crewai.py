"""CrewAI → keel.instrument() → OTLP → Keel server → the stored trace.

CrewAI 1.15 pins openai<3, mcp<2 and pydantic<2.13, which clash with Keel's dev environment, so
the crew runs in a virtualenv of its own, made on first use (``conftest.side_venv``; or
``KEEL_CREWAI_PYTHON`` names a Python with ``crewai``, ``openinference-instrumentation-crewai``,
``openinference-instrumentation-openai``, ``opentelemetry-exporter-otlp-proto-http`` and
``orjson``); Keel's SDK comes from this checkout.
"""

from __future__ import annotations

import pytest

from conftest import KeelServer, llm_calls, run_side_script, side_venv
from keel.otlp.dialects import to_llm_call

REQUIREMENTS = (
    "crewai==1.15.30",
    "openinference-instrumentation-crewai==1.1.21",
    "openinference-instrumentation-openai==0.1.66",
)


@pytest.mark.slow
def test_crewai_crew(keel_server: KeelServer, fake_llm) -> None:
    python = side_venv("crewai", REQUIREMENTS, "KEEL_CREWAI_PYTHON")
    out = run_side_script(python, "crewai_run.py", fake_llm, keel_server)
    assert "{'crewai': 'on', 'openai': 'on'}" in out
    assert "OUTPUT Hello! How can I help you today?" in out
    trace_id = out.strip().splitlines()[-1]
    trace = keel_server.wait_trace(trace_id, min_spans=4)
    kinds = {s.attributes.get("openinference.span.kind") for s in trace.spans}
    assert {"AGENT", "CHAIN", "LLM"} <= kinds
    agents = [to_llm_call(s) for s in trace.spans if s.scope and "crewai" in s.scope]
    assert any(a is not None and a.operation == "invoke_agent" for a in agents)
    [(_, call)] = llm_calls(trace, scope_prefix="openinference.instrumentation.openai")
    assert call.request_model == "gpt-4o-mini"
    assert call.output_messages[-1].content == "Hello! How can I help you today?"
    assert call.input_messages[-1].content and "Say hello" in call.input_messages[-1].content
