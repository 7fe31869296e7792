"""OpenAI Chat Completions and Embeddings upstream (also the base of Azure and compatibles).

Translation is nearly the identity: the target's model replaces the caller's, Keel's own
request fields are dropped, and streaming always asks the upstream for the usage chunk (the
HTTP layer forwards it only when the caller asked for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, provider_error
from keel.gateway.providers.http import (
    HttpClient,
    Timeouts,
    classify_error,
    client_timeout,
    connection_error,
    post_json,
    redact,
    stream_event_json,
)

KEEL_FIELDS = frozenset({"variables", "keel"})
TAIL_WAIT_S = 2.0


def to_openai_request(body: Body, model: str, *, stream: bool) -> Body:
    """The upstream body: caller's fields, target's model, Keel's fields removed."""
    out = {k: v for k, v in body.items() if k not in KEEL_FIELDS}
    out["model"] = model
    if stream:
        out["stream"] = True
        opts = dict(out.get("stream_options") or {})
        opts["include_usage"] = True
        opts.pop("include_obfuscation", None)
        out["stream_options"] = opts
    else:
        out.pop("stream", None)
        out.pop("stream_options", None)
    return out


def chunk_error(chunk: Body, where: str) -> ProviderError:
    """An in-stream ``{"error": ...}`` payload as a ProviderError."""
    err = chunk.get("error")
    msg = err.get("message") if isinstance(err, dict) else str(err)
    code = (err.get("code") or err.get("type")) if isinstance(err, dict) else None
    retryable = code in ("rate_limit_exceeded", "server_error", "overloaded_error", "overloaded")
    return provider_error(
        f"{where} reported an error in the stream: {redact(str(msg)[:300])}",
        status=None,
        code="upstream_error",
        retryable=retryable,
    )


async def read_sse(
    resp: aiohttp.ClientResponse, tail: list[bool]
) -> AsyncIterator[tuple[str | None, bytes]]:
    """SSE (event, data) pairs. Once ``tail[0]`` is set (the answer is complete), a missing
    terminator is waited for only briefly."""
    event: str | None = None
    data: list[bytes] = []
    content = resp.content
    while True:
        if tail[0]:
            try:
                line = await asyncio.wait_for(content.readline(), TAIL_WAIT_S)
            except TimeoutError:
                return
        else:
            line = await content.readline()
        if not line:
            if data:
                yield event, b"\n".join(data)
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event = None
            data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")


class OpenAIProvider:
    """An OpenAI-shaped upstream at ``base_url`` (``.../v1``)."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None,
        http: HttpClient,
        models: list[str] | None = None,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.http = http
        self._models = list(models or [])
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._headers.update(headers or {})
        if api_key:
            self._headers.update(self.auth_headers(api_key))
        # built once as aiohttp's own type, so no per-request conversion
        self._headers = CIMultiDict(self._headers)  # type: ignore[assignment]
        self.timeouts = timeouts or Timeouts()
        self._t_once = client_timeout(self.timeouts, stream=False)
        self._t_stream = client_timeout(self.timeouts, stream=True)

    def __repr__(self) -> str:  # never show headers (they hold the key)
        return f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r})"

    @staticmethod
    def auth_headers(api_key: str) -> dict[str, str]:
        """Headers that carry the provider key."""
        return {"Authorization": f"Bearer {api_key}"}

    def url(self, path: str, model: str) -> str:
        """Endpoint URL for ``path`` (``chat/completions``, ``embeddings``)."""
        return f"{self.base_url}/{path}"

    def models(self) -> list[str]:
        """Configured model names."""
        return list(self._models)

    def _model(self, body: Body) -> str:
        return str(body.get("model") or "")

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """One completion."""
        model = self._model(body)
        payload = orjson.dumps(to_openai_request(body, model, stream=False))
        out: Body = await post_json(
            self.http,
            self.url("chat/completions", model),
            self._headers,
            payload,
            self._t_once,
            self.name,
        )
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
            raise provider_error(f"{self.name} answered with an unexpected body", status=502)
        return out

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Chunks; a cut, a stall or a malformed chunk raises instead of ending quietly."""
        model = self._model(body)
        payload = orjson.dumps(to_openai_request(body, model, stream=True))
        n_choices = max(1, int(body.get("n") or 1))
        started = False
        try:
            resp = await self.http.session.post(
                self.url("chat/completions", model),
                data=payload,
                headers=self._headers,
                timeout=self._t_stream,
            )
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise connection_error(e, self.name) from None
        try:
            if resp.status >= 400:
                raise classify_error(resp.status, resp.headers, await resp.read(), self.name)
            finished = 0
            tail = [False]
            async for _event, data in read_sse(resp, tail):
                if data == b"[DONE]":
                    break
                chunk = stream_event_json(data, self.name, started=started)
                if chunk is None:
                    continue
                if "error" in chunk:
                    raise chunk_error(chunk, self.name)
                for ch in chunk.get("choices") or ():
                    if ch.get("finish_reason"):
                        finished += 1
                if finished >= n_choices and not chunk.get("choices"):
                    tail[0] = True  # usage after the finish: the answer is complete
                elif finished >= n_choices:
                    tail[0] = True
                started = True
                yield chunk
            if finished < n_choices:
                raise provider_error(
                    f"{self.name} ended the stream before the answer was complete",
                    status=None,
                    code="stream_cut",
                    retryable=not started,
                )
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise connection_error(e, self.name, started=started) from None
        finally:
            resp.release()

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Embeddings."""
        model = self._model(body)
        req = {k: v for k, v in body.items() if k not in KEEL_FIELDS}
        req["model"] = model
        out: Body = await post_json(
            self.http,
            self.url("embeddings", model),
            self._headers,
            orjson.dumps(req),
            self._t_once,
            self.name,
        )
        return out


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: deployments in the path, ``api-version`` in the query, ``api-key`` header.

    ``base_url`` is the resource endpoint (``https://NAME.openai.azure.com``); the target's
    model is the deployment name.
    """

    kind = "azure_openai"

    def __init__(self, name: str, *, api_version: str = "2024-10-21", **kw: Any) -> None:
        self.api_version = api_version
        super().__init__(name, **kw)

    @staticmethod
    def auth_headers(api_key: str) -> dict[str, str]:
        """Azure reads the key from ``api-key``."""
        return {"api-key": api_key}

    def url(self, path: str, model: str) -> str:
        """Deployment URL."""
        return f"{self.base_url}/openai/deployments/{model}/{path}?api-version={self.api_version}"


class OpenAICompatibleProvider(OpenAIProvider):
    """vLLM, Ollama (``/v1``), llama.cpp server, LM Studio …: OpenAI's shape, key optional."""

    kind = "openai_compatible"
