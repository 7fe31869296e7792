"""Attribute names Keel itself writes on spans, shared by the SDK, prompt client and gateway.

Keel stamps its own facts (which registry prompt, which gateway route, which agent step) under the
``keel.`` namespace, and also writes the OTel GenAI names where the conventions have one, so
third-party backends understand the same spans. The dialect normalizer reads these names back into
``LlmCall``. Keep this module free of imports: everything may use it.
"""

from __future__ import annotations

from typing import Final

# Keel's own namespace -------------------------------------------------------------------------
PROMPT_NAME: Final = "keel.prompt.name"
"""Name of the registry prompt that produced the request (``support-answer``)."""
PROMPT_VERSION: Final = "keel.prompt.version"
"""Version number (int) of that prompt."""
PROMPT_LABEL: Final = "keel.prompt.label"
"""Label the prompt was resolved through (``production``, ``canary``), if any."""
PROMPT_HASH: Final = "keel.prompt.hash"
"""Content hash of the prompt version."""
ROUTE: Final = "keel.route"
"""Gateway route name the request went through."""
ROUTE_TARGET: Final = "keel.route.target"
"""The target (provider/model) the gateway chose for the route."""
RELEASE_ID: Final = "keel.release.id"
"""Release (canary) the request was assigned to, if any."""
RELEASE_ARM: Final = "keel.release.arm"
"""``baseline`` or ``candidate``."""
SPAN_KIND: Final = "keel.span.kind"
"""Kind given to ``keel.span``/``@keel.trace``: agent, tool, retriever, llm, chain."""
PROJECT: Final = "keel.project"
"""Resource attribute: the Keel project the SDK sends to."""

# Names Keel shares with the field -------------------------------------------------------------
AGENT_STEP: Final = "agent.trajectory.step"
"""Index of the step in an agent trajectory (int)."""
GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
GEN_AI_PROMPT_VERSION: Final = "gen_ai.prompt.version"
GEN_AI_OPERATION: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_CACHE_READ_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_DATA_SOURCE_ID: Final = "gen_ai.data_source.id"
GEN_AI_RETRIEVAL_DOCUMENTS: Final = "gen_ai.retrieval.documents"
GEN_AI_RETRIEVAL_QUERY: Final = "gen_ai.retrieval.query.text"
GEN_AI_TTFC: Final = "gen_ai.response.time_to_first_chunk"
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
ERROR_TYPE: Final = "error.type"
