"""LlamaIndex (llama-index-llms-openai) → keel.instrument() → OTLP → Keel → the stored trace."""

from __future__ import annotations

import pytest

import keel
from conftest import KeelServer, llm_calls, trace_id_of

pytest.importorskip("llama_index.core")
li_openai = pytest.importorskip("llama_index.llms.openai")


@pytest.mark.slow
def test_llama_index_chat(instrumented: KeelServer, fake_llm) -> None:
    assert keel.instrument("llama_index") == {"llama_index": "on"}
    from llama_index.core.llms import ChatMessage

    llm = li_openai.OpenAI(
        model="gpt-4o-mini", api_base=fake_llm.url, api_key="sk-fake", max_retries=0
    )
    with keel.span("llama-index-run", kind="chain") as root:
        resp = llm.chat([ChatMessage(role="user", content="Say hello in one sentence.")])
    assert resp.message.content == "Hello! How can I help you today?"

    trace = instrumented.wait_trace(trace_id_of(root), min_spans=2)
    calls = llm_calls(trace, scope_prefix="openinference.instrumentation.llama_index")
    assert calls
    _, call = calls[-1]
    assert call.dialect == "openinference"
    assert call.input_messages[-1].content == "Say hello in one sentence."
    assert call.output_messages[-1].content == "Hello! How can I help you today?"
    assert call.input_tokens == 13 and call.output_tokens == 7
