"""Turn on the instrumentors the field already maintains, for the frameworks that are installed.

Keel does not rewrite framework integrations: ``keel.instrument()`` finds the OpenInference (or
OpenTelemetry contrib) instrumentor for each installed framework and enables it on Keel's
tracer provider. Install them with ``pip install "keel-llmops[integrations]"``.

| name | framework package | instrumentor (first found) |
|---|---|---|
| ``openai`` | ``openai`` | ``openinference-instrumentation-openai``, ``opentelemetry-instrumentation-openai-v2`` |
| ``anthropic`` | ``anthropic`` | the SDK's own tracing (2.x), else ``openinference-instrumentation-anthropic``, ``opentelemetry-instrumentation-anthropic`` |
| ``langchain`` | ``langchain-core`` | ``openinference-instrumentation-langchain`` |
| ``llama_index`` | ``llama-index-core`` | ``openinference-instrumentation-llama-index`` |
| ``openai_agents`` | ``openai-agents`` | ``openinference-instrumentation-openai-agents`` |
| ``crewai`` | ``crewai`` | ``openinference-instrumentation-crewai`` |
| ``mcp`` | ``mcp`` | the SDK's own tracing (2.x), else ``openinference-instrumentation-mcp`` |
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["INTEGRATIONS", "Integration", "instrument", "uninstrument"]

_log = logging.getLogger("keel.sdk")


@dataclass(frozen=True)
class Integration:
    """A framework and the instrumentors that can trace it, in order of preference.

    ``native_module``: when this module exists, the framework traces itself with OpenTelemetry
    (e.g. the Anthropic SDK since 2.x); Keel then adds no instrumentor, which would double every
    span, and only asks for message content through ``native_content_env``.
    """

    name: str
    framework_module: str
    instrumentors: tuple[tuple[str, str], ...]
    native_module: str | None = None
    native_content_env: tuple[str, str] | None = None


INTEGRATIONS: dict[str, Integration] = {
    i.name: i
    for i in (
        Integration(
            "openai",
            "openai",
            (
                ("openinference.instrumentation.openai", "OpenAIInstrumentor"),
                ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
            ),
        ),
        Integration(
            "anthropic",
            "anthropic",
            (
                ("openinference.instrumentation.anthropic", "AnthropicInstrumentor"),
                ("opentelemetry.instrumentation.anthropic", "AnthropicInstrumentor"),
            ),
            native_module="anthropic._tracing",
            native_content_env=("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", "content"),
        ),
        Integration(
            "langchain",
            "langchain_core",
            (("openinference.instrumentation.langchain", "LangChainInstrumentor"),),
        ),
        Integration(
            "llama_index",
            "llama_index.core",
            (("openinference.instrumentation.llama_index", "LlamaIndexInstrumentor"),),
        ),
        Integration(
            "openai_agents",
            "agents",
            (("openinference.instrumentation.openai_agents", "OpenAIAgentsInstrumentor"),),
        ),
        Integration(
            "crewai",
            "crewai",
            (("openinference.instrumentation.crewai", "CrewAIInstrumentor"),),
        ),
        Integration(
            "mcp",
            "mcp",
            (("openinference.instrumentation.mcp", "MCPInstrumentor"),),
            native_module="mcp.shared._otel",
        ),
    )
}

_lock = threading.Lock()
_active: dict[str, Any] = {}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def instrument(
    *names: str, tracer_provider: Any = None, capture_content: bool = True
) -> dict[str, str]:
    """Enable the instrumentors for ``names`` (default: every installed framework).

    Returns ``{name: status}`` with status ``"on"`` (now or already), ``"native"`` (the
    framework traces itself; with ``capture_content`` its content option is set in the
    environment unless already set), ``"not installed"``
    (framework absent), ``"no instrumentor"`` (framework present, no instrumentor package) or
    ``"failed"`` (logged). Never raises for a missing or broken integration; an unknown name is
    a ``ValueError``. Call after ``keel.init()`` (the instrumentors use its tracer provider).
    """
    unknown = [n for n in names if n not in INTEGRATIONS]
    if unknown:
        raise ValueError(f"unknown integrations {unknown}; known: {sorted(INTEGRATIONS)}")
    if tracer_provider is None:
        from opentelemetry import trace

        tracer_provider = trace.get_tracer_provider()
    result: dict[str, str] = {}
    with _lock:
        for name in names or tuple(INTEGRATIONS):
            integ = INTEGRATIONS[name]
            if name in _active:
                result[name] = "on"
                continue
            if not _installed(integ.framework_module):
                result[name] = "not installed"
                continue
            if integ.native_module and _installed(integ.native_module):
                if capture_content and integ.native_content_env:
                    os.environ.setdefault(*integ.native_content_env)
                result[name] = "native"
                continue
            result[name] = "no instrumentor"
            for module, cls_name in integ.instrumentors:
                if not _installed(module.rsplit(".", 1)[0]) or not _installed(module):
                    continue
                try:
                    cls = getattr(importlib.import_module(module), cls_name)
                    inst = cls()
                    if not getattr(inst, "is_instrumented_by_opentelemetry", False):
                        inst.instrument(tracer_provider=tracer_provider)
                    _active[name] = inst
                    result[name] = "on"
                    break
                except Exception:
                    _log.warning("keel: could not enable %s via %s", name, module, exc_info=True)
                    result[name] = "failed"
    return result


def uninstrument(*names: str) -> None:
    """Disable instrumentors enabled by :func:`instrument` (all by default)."""
    with _lock:
        for name in names or tuple(_active):
            inst = _active.pop(name, None)
            if inst is None:
                continue
            try:
                inst.uninstrument()
            except Exception:
                _log.debug("keel: could not uninstrument %s", name, exc_info=True)
