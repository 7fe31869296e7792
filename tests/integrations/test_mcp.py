"""MCP (client and server in-process) → OTLP → Keel server → one trace across both sides."""

from __future__ import annotations

import asyncio

import pytest

import keel
from conftest import KeelServer, trace_id_of
from keel.otlp.dialects import to_llm_call

mcp = pytest.importorskip("mcp")


@pytest.mark.slow
def test_mcp_tool_call_is_one_trace(instrumented: KeelServer) -> None:
    assert keel.instrument("mcp")["mcp"] in ("on", "native")
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("weather")

    @server.tool()
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        with keel.span("lookup", kind="retriever") as s:
            s.set_documents([{"id": "paris", "content": "sunny, 24C", "score": 0.9}])
        return "sunny, 24C"

    async def run() -> str:
        async with Client(server) as client:
            result = await client.call_tool("get_weather", {"city": "Paris"})
            return result.content[0].text

    with keel.span("mcp-agent", kind="agent") as root:
        text = asyncio.run(run())
    assert text == "sunny, 24C"

    trace = instrumented.wait_trace(trace_id_of(root), min_spans=3)
    views = [(s, to_llm_call(s)) for s in trace.spans]
    tool_steps = [
        (s, v) for s, v in views if v is not None and v.operation == "execute_tool" and v.tool_name
    ]
    assert any(v.tool_name == "get_weather" for _, v in tool_steps)
    # the server-side step joined the client's trace (context passed in params._meta)
    lookup = next(v for s, v in views if s.name == "lookup")
    assert lookup is not None and lookup.operation == "retrieval"
    assert [d.id for d in lookup.documents] == ["paris"]
