"""Any OpenAI-compatible server (vLLM, Ollama's ``/v1``, llama.cpp server, LM Studio)."""

from keel.gateway.providers.openai import OpenAICompatibleProvider

__all__ = ["OpenAICompatibleProvider"]
