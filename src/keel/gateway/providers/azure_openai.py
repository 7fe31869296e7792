"""Azure OpenAI: OpenAI's shapes with deployment URLs and the ``api-key`` header."""

from keel.gateway.providers.openai import AzureOpenAIProvider

__all__ = ["AzureOpenAIProvider"]
