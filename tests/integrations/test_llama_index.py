"""LlamaIndex (llama-index-llms-openai) → keel.instrument() → OTLP → Keel → the stored trace.

llama-index-llms-openai pins openai<3, which clashes with Keel's dev environment, so the call runs
in a virtualenv of its own, made on first use (``conftest.side_venv``; or
``KEEL_LLAMA_INDEX_PYTHON`` names a Python with ``llama-index-core``,
``llama-index-llms-openai``, ``openinference-instrumentation-llama-index``,
``opentelemetry-exporter-otlp-proto-http`` and ``orjson``); Keel's SDK comes from this checkout.
"""

from __future__ import annotations

import pytest

from conftest import KeelServer, llm_calls, run_side_script, side_venv

REQUIREMENTS = (
    "llama-index-core==0.14.25",
    "llama-index-llms-openai==0.8.3",
    "openinference-instrumentation-llama-index==4.6.1",
)


@pytest.mark.slow
def test_llama_index_chat(keel_server: KeelServer, fake_llm) -> None:
    python = side_venv("llama-index", REQUIREMENTS, "KEEL_LLAMA_INDEX_PYTHON")
    out = run_side_script(python, "llama_index_run.py", fake_llm, keel_server)
    assert "{'llama_index': 'on'}" in out
    assert "OUTPUT Hello! How can I help you today?" in out
    trace_id = out.strip().splitlines()[-1]
    trace = keel_server.wait_trace(trace_id, min_spans=2)
    calls = llm_calls(trace, scope_prefix="openinference.instrumentation.llama_index")
    assert calls
    _, call = calls[-1]
    assert call.dialect == "openinference"
    assert call.input_messages[-1].content == "Say hello in one sentence."
    assert call.output_messages[-1].content == "Hello! How can I help you today?"
    assert call.input_tokens == 13 and call.output_tokens == 7
