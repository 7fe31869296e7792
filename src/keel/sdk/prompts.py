"""``keel.get_prompt``: fetch registry prompts over HTTP, with a cache that outlives outages.

Semantics (after Langfuse and MLflow, see ``docs/prompts.md``):

- A prompt fetched by label (``production`` by default) is cached for ``cache_ttl_s`` (60 s);
  a prompt fetched by version number is immutable and cached for the life of the process.
- When the cache entry is older than the TTL, the next call refreshes it. If Keel cannot be
  reached (or answers 5xx), the stale copy keeps being served (``prompt.is_stale``) and the
  next refresh is tried only after ``retry_after_s``, so a down server does not add latency to
  every call.
- With nothing cached, a caller-given ``fallback`` (a template string or a list of messages)
  is returned (``prompt.is_fallback``), so the app keeps running when Keel is down. Without a
  fallback the error is raised.

Rendering (``prompt.compile(**variables)``) happens locally with the same template engine as
the server. Inside an active OpenTelemetry span it stamps the prompt's name, version, label and
content hash on that span (:mod:`keel.core.semconv`), which is what prompt-version coverage of
traffic is measured from.

This module imports neither FastAPI nor SQLAlchemy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from keel.core import semconv
from keel.core.prompts import PromptContent, PromptMessage
from keel.errors import (
    AuthenticationError,
    InvalidInputError,
    KeelError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from keel.prompts import template as tmpl

log = logging.getLogger("keel.sdk.prompts")

DEFAULT_BASE_URL = "http://127.0.0.1:7400"
DEFAULT_TTL_S = 60.0


@dataclass(frozen=True)
class Prompt:
    """A prompt version as the SDK holds it; ``compile`` renders it."""

    name: str
    version: int | None
    label: str | None
    content: PromptContent
    content_hash: str | None
    includes: dict[str, PromptContent] = field(default_factory=dict)
    is_fallback: bool = False
    is_stale: bool = False

    @property
    def type(self) -> str:
        """``text`` or ``chat``."""
        return self.content.type

    @property
    def config(self) -> dict[str, Any]:
        """The model configuration stored with the version (model, temperature, tools …)."""
        return dict(self.content.model_config_)

    @property
    def template(self) -> str | None:
        """The template of a text prompt."""
        return self.content.template

    @property
    def messages(self) -> list[dict[str, str]]:
        """The message templates of a chat prompt."""
        return [{"role": m.role, "content": m.content} for m in self.content.messages]

    @property
    def variables(self) -> list[str]:
        """Variables a render needs (includes' variables included)."""
        return sorted(tmpl.required_variables(self.content, self._resolve))

    def _resolve(self, ref: tmpl.PromptRef) -> PromptContent:
        try:
            return self.includes[str(ref)]
        except KeyError:
            raise InvalidInputError(f"included prompt {ref} was not delivered with {self.name}")

    def compile(self, **variables: Any) -> str | list[dict[str, str]]:
        """Render with exactly the variables the prompt uses; stamps the current span."""
        out = tmpl.render(self.content, variables, self._resolve, name=self.name)
        self._stamp()
        return out

    def render(
        self, variables: dict[str, Any] | None = None, **kw: Any
    ) -> str | list[dict[str, str]]:
        """Like :meth:`compile`, with variables as a mapping."""
        return self.compile(**{**(variables or {}), **kw})

    def _stamp(self) -> None:
        try:
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
            return
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attrs: dict[str, Any] = {
            semconv.PROMPT_NAME: self.name,
            semconv.GEN_AI_PROMPT_NAME: self.name,
        }
        if self.version is not None:
            attrs[semconv.PROMPT_VERSION] = self.version
            attrs[semconv.GEN_AI_PROMPT_VERSION] = self.version
        if self.label:
            attrs[semconv.PROMPT_LABEL] = self.label
        if self.content_hash:
            attrs[semconv.PROMPT_HASH] = self.content_hash
        span.set_attributes(attrs)


def fallback_prompt(name: str, fallback: str | list[dict[str, str]], label: str | None) -> Prompt:
    """A :class:`Prompt` built from a caller-given fallback template."""
    if isinstance(fallback, str):
        content = PromptContent(type="text", template=fallback)
    else:
        content = PromptContent(
            type="chat", messages=[PromptMessage.model_validate(m) for m in fallback]
        )
    tmpl.validate(content)
    return Prompt(
        name=name, version=None, label=label, content=content, content_hash=None, is_fallback=True
    )


def _content(d: dict[str, Any]) -> PromptContent:
    return PromptContent.model_validate(
        {
            "type": d["type"],
            "template": d.get("template"),
            "messages": d.get("messages") or [],
            "engine": d.get("engine", "mustache"),
            "model_config": d.get("config") or {},
            "variables_schema": d.get("variables_schema") or {},
        }
    )


@dataclass
class _Entry:
    prompt: Prompt
    expires: float
    retry_at: float = 0.0


class PromptClient:
    """Fetches prompts from a Keel server, with a thread-safe TTL cache."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        cache_ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 3.0,
        retry_after_s: float = 10.0,
        transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.base_url = (base_url or os.environ.get("KEEL_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self.api_key = api_key if api_key is not None else os.environ.get("KEEL_API_KEY")
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._transport = transport
        self._client: Any = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], _Entry] = {}

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            headers = {"user-agent": "keel-sdk"}
            if self.api_key:
                headers["authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.Client(
                base_url=self.base_url,
                headers=headers,
                timeout=self.timeout_s,
                transport=self._transport,
            )
        return self._client

    def fetch(self, name: str, *, label: str | None = None, version: int | None = None) -> Prompt:
        """Fetch from the server, no cache. Raises Keel errors."""
        import httpx

        params: dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        elif label is not None:
            params["label"] = label
        try:
            r = self._http().get(f"/api/prompts/{quote(name, safe='')}", params=params)
        except httpx.HTTPError as e:
            raise UnavailableError(f"cannot reach Keel at {self.base_url}: {e}")
        if r.status_code != 200:
            try:
                msg = r.json()["error"]["message"]
            except Exception:
                msg = r.text[:200]
            exc: type[KeelError] = {
                400: InvalidInputError,
                401: AuthenticationError,
                403: PermissionDeniedError,
                404: NotFoundError,
            }.get(r.status_code, UnavailableError)
            raise exc(f"Keel answered {r.status_code} for prompt {name!r}: {msg}")
        d = r.json()
        return Prompt(
            name=d["name"],
            version=d["version"],
            label=d.get("label") or label,
            content=_content(d),
            content_hash=d.get("content_hash"),
            includes={ref: _content(v) for ref, v in (d.get("includes") or {}).items()},
        )

    def get_prompt(
        self,
        name: str,
        *,
        label: str | None = None,
        version: int | None = None,
        cache_ttl_s: float | None = None,
        fallback: str | list[dict[str, str]] | None = None,
    ) -> Prompt:
        """A prompt by label (default ``production``) or version, through the cache."""
        if version is not None and label is not None:
            raise InvalidInputError("give a version or a label, not both")
        if version is None and label is None:
            label = "production"
        key = (name, f"v{version}" if version is not None else f"l{label}")
        ttl = self.cache_ttl_s if cache_ttl_s is None else cache_ttl_s
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None:
            if version is not None or now < entry.expires:
                return entry.prompt
            if now < entry.retry_at:
                return replace(entry.prompt, is_stale=True)
        try:
            prompt = self.fetch(name, label=label, version=version)
        except KeelError as e:
            if entry is not None:
                log.warning("serving stale prompt %s (%s): %s", name, key[1], e.message)
                with self._lock:
                    entry.retry_at = now + self.retry_after_s
                return replace(entry.prompt, is_stale=True)
            if fallback is not None:
                log.warning("serving the fallback for prompt %s: %s", name, e.message)
                return fallback_prompt(name, fallback, label)
            raise
        with self._lock:
            self._cache[key] = _Entry(prompt, expires=now + ttl)
        return prompt

    def invalidate(self, name: str | None = None) -> None:
        """Drop cached prompts (all, or one prompt's)."""
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                for k in [k for k in self._cache if k[0] == name]:
                    del self._cache[k]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None


_default: PromptClient | None = None
_default_lock = threading.Lock()


def configure(base_url: str | None = None, api_key: str | None = None, **kw: Any) -> PromptClient:
    """Set the client ``keel.get_prompt`` uses (defaults: ``KEEL_BASE_URL``, ``KEEL_API_KEY``)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = PromptClient(base_url, api_key, **kw)
        return _default


def default_client() -> PromptClient:
    """The process-wide client (created from the environment on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PromptClient()
        return _default


def get_prompt(
    name: str,
    *,
    label: str | None = None,
    version: int | None = None,
    cache_ttl_s: float | None = None,
    fallback: str | list[dict[str, str]] | None = None,
) -> Prompt:
    """Fetch a registry prompt (see the module docstring for cache and fallback rules).

    >>> prompt = keel.get_prompt("refund-agent", label="production", fallback="Help with {{q}}")
    >>> messages = prompt.compile(q="Where is my refund?")
    """
    return default_client().get_prompt(
        name, label=label, version=version, cache_ttl_s=cache_ttl_s, fallback=fallback
    )
