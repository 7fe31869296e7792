"""Routes that name a registry prompt (``prompt = "refund-agent@production"``).

The gateway resolves the reference through the prompt registry, renders it with the request's
``variables`` (sent as an extra body field, e.g. ``extra_body={"variables": {...}}`` with the
OpenAI SDK) and puts the rendered messages before the caller's. Resolutions are cached for
``ttl_s`` seconds per (project, reference), so a label move reaches the gateway within that
time without a store read on every request; rendering runs per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """What the pipeline needs from a rendered prompt."""

    name: str
    version: int
    label: str | None
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)


class RegistryPromptResolver:
    """Callable ``(project_id, ref, variables) -> RenderedPrompt`` over a PromptRegistry."""

    def __init__(self, registry: Any, *, ttl_s: float = 5.0) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}

    async def __call__(
        self, project_id: str, ref: str, variables: Mapping[str, Any] | None
    ) -> RenderedPrompt:
        """Resolve (cached) and render."""
        if variables is not None and not isinstance(variables, Mapping):
            raise InvalidInputError("'variables' must be an object")
        key = (project_id, ref)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None or hit[0] < now:
            resolved = await asyncio.to_thread(self.registry.resolve, project_id, ref)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now + self.ttl_s, resolved)
        else:
            resolved = hit[1]
        pv = resolved.version
        from keel.prompts import template

        out = template.render(
            pv.content, variables, self.registry.resolver(project_id), name=pv.name
        )
        messages = [{"role": "user", "content": out}] if isinstance(out, str) else list(out)
        params = {
            k: v
            for k, v in (pv.content.model_config_ or {}).items()
            if k in ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed")
        }
        return RenderedPrompt(
            name=pv.name, version=pv.version, label=resolved.label, messages=messages, params=params
        )
