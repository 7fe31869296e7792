"""The request pipeline: resolve the route, check the key, cache, limits, call, account, record.

:class:`Gateway` owns the router snapshot (swapped atomically on hot reload), the shared
upstream HTTP session, the span emitter and the optional cache and limiter components. The
HTTP layer (``keel.server.routes.gateway``) only parses and serialises; everything that
decides is here, so tests and benchmarks can drive the pipeline without a server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from keel.core.projects import ApiKey
from keel.errors import ConfigError, InvalidInputError, KeelError, ProviderError
from keel.gateway.cache import cache_policy
from keel.gateway.config import GatewayConfig, parse_gateway_config
from keel.gateway.pricing import cost_usd
from keel.gateway.provider import Body, CacheHit, CacheScope, CallContext, Decision, provider_error
from keel.gateway.providers.fake import chunks as fake_chunks
from keel.gateway.routing import RouterSnapshot, RouteRuntime, Shared
from keel.gateway.telemetry import SpanEmitter, now_ns

log = logging.getLogger("keel.gateway")

PromptResolver = Callable[[str, str, dict[str, Any] | None], Any]


def _has_limits(key: ApiKey) -> bool:
    return (
        key.rpm_limit is not None
        or key.tpm_limit is not None
        or key.budget_usd_day is not None
        or key.budget_usd_month is not None
    )


def parse_traceparent(value: str | None) -> tuple[str | None, str | None]:
    """(trace_id, parent_span_id) from a W3C ``traceparent`` header, when valid."""
    if not value or len(value) < 55:
        return None, None
    parts = value.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None, None
    return parts[1].lower(), parts[2].lower()


async def _maybe_await(v: Any) -> Any:
    if asyncio.iscoroutine(v):
        return await v
    return v


def usage_into(d: Decision, usage: Body | None, price: tuple[float, float] | None) -> None:
    """Copy an OpenAI usage block (and its cost) into the decision."""
    if not usage:
        return
    d.input_tokens = int(usage.get("prompt_tokens") or 0)
    d.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, dict) and details.get("cached_tokens"):
        d.cached_tokens = int(details["cached_tokens"])
    d.cost_usd = cost_usd(price, usage)


class Gateway:
    """Everything behind ``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models``."""

    def __init__(
        self,
        raw_config: dict[str, Any] | None = None,
        *,
        source: str | Path | None = None,
        sink: Callable[[Any], Any] | None = None,
        cache: Any = None,
        semantic_cache: Any = None,
        limiter: Any = None,
        prompt_resolver: PromptResolver | None = None,
    ) -> None:
        self.shared = Shared()
        self.source = Path(source) if source else None
        self._mtime = self._stat()
        self.emitter = SpanEmitter(sink)
        self.cache = cache
        self.semantic_cache = semantic_cache
        self.limiter = limiter
        self.prompt_resolver = prompt_resolver
        self.snapshot = RouterSnapshot(
            parse_gateway_config(raw_config), self.shared, self._record_mirror
        )
        self.reloads = 0
        self.reload_errors = 0
        self._reload_task: asyncio.Task[None] | None = None

    @property
    def config(self) -> GatewayConfig:
        """The effective configuration."""
        return self.snapshot.config

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start background work (span flushing, config watching)."""
        self.emitter.start()
        if self.source is not None and self.config.reload_interval_s > 0:
            self._reload_task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        """Stop background work; in-flight shadow calls get a bounded wait."""
        if self._reload_task is not None:
            self._reload_task.cancel()
            self._reload_task = None
        await self.shared.mirror_pool.drain(2.0)
        await self.emitter.close()
        await self.shared.http.close()
        if self.limiter is not None and hasattr(self.limiter, "close"):
            try:
                await _maybe_await(self.limiter.close())
            except Exception:
                log.warning("limiter close failed", exc_info=True)

    def _stat(self) -> float:
        try:
            return os.stat(self.source).st_mtime if self.source else 0.0
        except OSError:
            return 0.0

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s or 1.0)
            m = self._stat()
            if m and m != self._mtime:
                self._mtime = m
                self.reload()

    def reload(self, raw: dict[str, Any] | None = None) -> bool:
        """Validate and swap in a new config (from ``raw`` or the source file). Requests in
        flight keep the snapshot they started with. A bad config is logged and ignored."""
        try:
            if raw is None:
                from keel.settings import load_settings

                raw = load_settings(self.source).gateway
            snap = RouterSnapshot(parse_gateway_config(raw), self.shared, self._record_mirror)
        except (KeelError, OSError) as e:
            self.reload_errors += 1
            log.error("gateway config reload failed, keeping the previous one: %s", e)
            return False
        if snap.hash != self.snapshot.hash:
            self.snapshot = snap
            self.reloads += 1
            log.info("gateway config reloaded (hash %s)", snap.hash)
        return True

    # -- helpers --------------------------------------------------------------------------
    def _context(
        self,
        rt: RouteRuntime,
        snap: RouterSnapshot,
        project_id: str,
        key: ApiKey | None,
        body: Body,
        headers: Any,
    ) -> CallContext:
        sticky = None
        if rt.sticky_header is not None and headers is not None:
            sticky = headers.get(rt.sticky_header)
        elif rt.sticky_user:
            sticky = body.get("user") or body.get("safety_identifier")
        ctx = CallContext(project_id=project_id, key_id=key.id if key else None, sticky_key=sticky)
        ctx.deadline = ctx.start + rt.timeout_s
        d = ctx.decision
        d.route = rt.name
        d.config_hash = snap.hash
        return ctx

    def _check_chat(self, body: Any) -> str:
        if not isinstance(body, dict):
            raise InvalidInputError("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidInputError("'model' is required", code="invalid_request")
        msgs = body.get("messages")
        if msgs is None and isinstance(body.get("variables"), dict):
            msgs = body["messages"] = []  # a prompt route renders the messages from variables
        if not isinstance(msgs, list) or not (msgs or "variables" in body):
            raise InvalidInputError("'messages' must be a non-empty list")
        for m in msgs:
            if not isinstance(m, dict) or "role" not in m:
                raise InvalidInputError("every message needs a 'role'")
        n = body.get("n")
        if n is not None and (not isinstance(n, int) or not 1 <= n <= 16):
            raise InvalidInputError("'n' must be an integer from 1 to 16")
        if "base_url" in body or "api_base" in body or "api_key" in body:
            raise InvalidInputError("upstream URLs and provider keys cannot be set by a request")
        return model

    async def _render_prompt(self, rt: RouteRuntime, body: Body, ctx: CallContext) -> Body:
        ref = rt.config.prompt if rt.config is not None else None
        if not ref:
            return body
        if self.prompt_resolver is None:
            raise provider_error(
                f"route '{rt.name}' names prompt '{ref}' but no prompt registry is available",
                status=503,
                code="prompt_unavailable",
                retryable=False,
            )
        rendered = await _maybe_await(
            self.prompt_resolver(ctx.project_id, ref, body.get("variables"))
        )
        d = ctx.decision
        d.prompt_name = getattr(rendered, "name", None)
        d.prompt_version = getattr(rendered, "version", None)
        d.prompt_label = getattr(rendered, "label", None)
        out = body.copy()
        msgs = list(getattr(rendered, "messages", []) or [])
        # The prompt's messages come first; the caller's messages (minus any system) follow.
        out["messages"] = msgs + [
            m for m in body.get("messages") or () if m.get("role") not in ("system", "developer")
        ]
        extra = getattr(rendered, "params", None) or {}
        for k, v in extra.items():
            out.setdefault(k, v)
        return out

    def _scope(self, rt: RouteRuntime, ctx: CallContext, model: str) -> CacheScope:
        pv = ctx.decision.prompt_version
        return CacheScope(
            project_id=ctx.project_id,
            route=rt.name,
            model=model,
            prompt_version=str(pv) if pv is not None else None,
        )

    async def _cache_lookup(
        self, rt: RouteRuntime, ctx: CallContext, body: Body, model: str, headers: Any = None
    ) -> Body | None:
        cc = rt.config.cache if rt.config is not None else None
        if cc is None or not (cc.exact or cc.semantic):
            return None
        if headers is not None and not cache_policy(headers).read:  # Cache-Control, x-keel-cache
            return None
        scope = self._scope(rt, ctx, model)
        for enabled, cache in ((cc.exact, self.cache), (cc.semantic, self.semantic_cache)):
            if not enabled or cache is None:
                continue
            try:
                hit: CacheHit | None = await _maybe_await(cache.lookup(scope, body))
            except Exception:  # a cache that is down is bypassed, never an error
                log.warning("cache lookup failed; bypassing", exc_info=True)
                continue
            if hit is not None:
                ctx.decision.cache_hit = True
                ctx.decision.cache_similarity = hit.similarity
                ctx.decision.cache_encoder = hit.encoder
                return hit.response
        return None

    async def _cache_store(
        self,
        rt: RouteRuntime,
        ctx: CallContext,
        body: Body,
        model: str,
        resp: Body,
        headers: Any = None,
    ) -> None:
        cc = rt.config.cache if rt.config is not None else None
        if cc is None or (headers is not None and not cache_policy(headers).write):
            return
        scope = self._scope(rt, ctx, model)
        for enabled, cache in ((cc.exact, self.cache), (cc.semantic, self.semantic_cache)):
            if enabled and cache is not None:
                try:
                    await _maybe_await(cache.store(scope, body, resp, ttl_s=cc.ttl_s))
                except Exception:
                    log.warning("cache store failed", exc_info=True)

    async def _reserve(self, key: ApiKey | None, rt: RouteRuntime, model: str, body: Body) -> Any:
        if key is None or self.limiter is None:
            return None
        self.limiter.check_access(
            key, route=rt.name if rt.config is not None else None, model=model
        )
        if not _has_limits(key):
            return None
        from keel.gateway.limits import estimate_tokens

        est = estimate_tokens(body)
        top = max((max(p) for p in rt.prices.values()), default=0.0)
        return await self.limiter.reserve(key, est, est * top)

    def _price(self, rt: RouteRuntime, d: Decision) -> tuple[float, float] | None:
        return rt.prices.get(d.target or "") if d.target else None

    def _record(
        self,
        kind: str,
        ctx: CallContext,
        body: Body,
        resp: Body | None,
        err: str | None,
        start_ns: int,
        trace: tuple[str | None, str | None],
    ) -> None:
        self.emitter.record((kind, ctx, body, resp, err, start_ns, now_ns(), trace[0], trace[1]))

    def _record_mirror(
        self,
        ctx: CallContext,
        sd: Decision,
        body: Body,
        primary: Body | None,
        shadow: Body | None,
        err: str | None,
        seconds: float,
    ) -> None:
        sctx = CallContext(project_id=ctx.project_id, key_id=ctx.key_id, decision=sd)
        sd.route = ctx.decision.route
        sd.config_hash = ctx.decision.config_hash
        if shadow is not None:
            usage_into(sd, shadow.get("usage"), None)
        end = now_ns()
        self.emitter.record(
            ("mirror", sctx, body, shadow, err, end - int(seconds * 1e9), end, None, None)
        )

    # -- chat -----------------------------------------------------------------------------
    async def chat(
        self, body: Any, *, project_id: str, key: ApiKey | None, headers: Any = None
    ) -> Body:
        """A non-streaming chat completion."""
        start_ns = now_ns()
        model = self._check_chat(body)
        snap = self.snapshot
        rt = snap.resolve(model)
        ctx = self._context(rt, snap, project_id, key, body, headers)
        trace = (
            parse_traceparent(headers.get("traceparent")) if headers is not None else (None, None)
        )
        err: str | None = None
        resp: Body | None = None
        res = None
        try:
            res = await self._reserve(key, rt, model, body)
            req = await self._render_prompt(rt, body, ctx)
            resp = await self._cache_lookup(rt, ctx, req, model, headers)
            if resp is None:
                budget = self.shared.retry_budget
                budget.active += 1
                try:
                    async with asyncio.timeout(max(0.001, ctx.remaining())):
                        resp = await rt.provider.chat(req, ctx)
                except TimeoutError:
                    raise provider_error(
                        f"no answer within the route's {rt.timeout_s:g} s deadline",
                        status=None,
                        code="upstream_timeout",
                    ) from None
                finally:
                    budget.active -= 1
                usage_into(ctx.decision, resp.get("usage"), self._price(rt, ctx.decision))
                await self._cache_store(rt, ctx, req, model, resp, headers)
            else:
                ctx.decision.input_tokens = ctx.decision.output_tokens = 0
                ctx.decision.cost_usd = 0.0
            return resp
        except KeelError as e:
            err = f"{e.code}: {e.message}"
            raise
        finally:
            if res is not None:
                await self._settle(res, ctx.decision, err)
            self._record("chat", ctx, body, resp, err, start_ns, trace)

    async def _settle(self, res: Any, d: Decision, err: str | None) -> None:
        try:
            if err is not None and d.input_tokens is None:
                await self.limiter.release(res)
            else:
                await self.limiter.commit(
                    res, (d.input_tokens or 0) + (d.output_tokens or 0), d.cost_usd or 0.0
                )
        except Exception:
            log.warning("limiter settle failed", exc_info=True)

    def stream(
        self, body: Any, *, project_id: str, key: ApiKey | None, headers: Any = None
    ) -> AsyncIterator[Body]:
        """Chunks of a streaming chat completion (the first ``__anext__`` raises errors that
        happen before any output, so the HTTP layer can still answer with a status)."""
        return self._stream(body, project_id, key, headers)

    async def _stream(
        self, body: Any, project_id: str, key: ApiKey | None, headers: Any
    ) -> AsyncIterator[Body]:
        start_ns = now_ns()
        t0 = time.monotonic()
        model = self._check_chat(body)
        snap = self.snapshot
        rt = snap.resolve(model)
        ctx = self._context(rt, snap, project_id, key, body, headers)
        trace = (
            parse_traceparent(headers.get("traceparent")) if headers is not None else (None, None)
        )
        d = ctx.decision
        err: str | None = None
        res = None
        acc = _Accumulator()
        budget = self.shared.retry_budget
        budget.active += 1
        try:
            res = await self._reserve(key, rt, model, body)
            req = await self._render_prompt(rt, body, ctx)
            cached = await self._cache_lookup(rt, ctx, req, model, headers)
            if cached is not None:
                d.input_tokens = d.output_tokens = 0
                d.cost_usd = 0.0
                d.ttft_ms = (time.monotonic() - t0) * 1000
                for c in _completion_chunks(cached):
                    acc.add(c)
                    yield c
                return
            it = rt.provider.stream(req, ctx).__aiter__()
            try:
                while True:
                    try:
                        async with asyncio.timeout(max(0.001, ctx.remaining())):
                            c = await it.__anext__()
                    except StopAsyncIteration:
                        break
                    if d.ttft_ms is None and c.get("choices"):
                        d.ttft_ms = (time.monotonic() - t0) * 1000
                    acc.add(c)
                    yield c
            finally:
                aclose = getattr(it, "aclose", None)
                if aclose is not None:
                    await aclose()
            usage_into(d, acc.usage, self._price(rt, d))
            if acc.finished and cc_enabled(rt):
                await self._cache_store(rt, ctx, req, model, acc.completion(model), headers)
        except TimeoutError:
            err = "upstream_timeout: the route's deadline passed"
            usage_into(d, acc.usage, self._price(rt, d))
            raise provider_error(
                f"no complete answer within the route's {rt.timeout_s:g} s deadline",
                status=None,
                code="upstream_timeout",
            ) from None
        except KeelError as e:
            err = f"{e.code}: {e.message}"
            usage_into(d, acc.usage, self._price(rt, d))
            raise
        except BaseException as e:  # client went away (GeneratorExit / CancelledError)
            err = f"client_disconnected: {type(e).__name__}"
            raise
        finally:
            budget.active -= 1
            if res is not None:
                await self._settle(res, d, err)
            self._record(
                "chat",
                ctx,
                body,
                acc.completion(d.model or model) if acc.seen else None,
                err,
                start_ns,
                trace,
            )

    # -- embeddings / models ----------------------------------------------------------------
    async def embed(
        self, body: Any, *, project_id: str, key: ApiKey | None, headers: Any = None
    ) -> Body:
        """Embeddings."""
        start_ns = now_ns()
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise InvalidInputError("'model' is required")
        inp = body.get("input")
        if inp is None or inp == "" or inp == []:
            raise InvalidInputError("'input' is required")
        model = body["model"]
        snap = self.snapshot
        rt = snap.resolve(model)
        ctx = self._context(rt, snap, project_id, key, body, headers)
        err = None
        out: Body | None = None
        try:
            if key is not None and self.limiter is not None:
                self.limiter.check_access(
                    key, route=rt.name if rt.config is not None else None, model=model
                )
            async with asyncio.timeout(max(0.001, ctx.remaining())):
                out = await rt.provider.embed(body, ctx)
            u = out.get("usage") or {}
            ctx.decision.input_tokens = int(u.get("prompt_tokens") or 0)
            return out
        except KeelError as e:
            err = f"{e.code}: {e.message}"
            raise
        finally:
            tid, parent = (
                parse_traceparent(headers.get("traceparent"))
                if headers is not None
                else (None, None)
            )
            self.emitter.record(
                ("embeddings", ctx, {"model": model}, None, err, start_ns, now_ns(), tid, parent)
            )

    def models(self, key: ApiKey | None = None) -> list[str]:
        """Model names the caller may use."""
        names = self.snapshot.model_names()
        if key is not None and (key.allowed_models is not None or key.allowed_routes is not None):
            from keel.gateway.limits import check_access

            allowed = []
            for n in names:
                try:
                    check_access(key, route=n if n in self.snapshot.routes else None, model=n)
                except KeelError:
                    continue
                allowed.append(n)
            return allowed
        return names


def cc_enabled(rt: RouteRuntime) -> bool:
    """Whether the route caches answers."""
    return rt.config is not None and (rt.config.cache.exact or rt.config.cache.semantic)


def _completion_chunks(resp: Body) -> list[Body]:
    msg = (resp.get("choices") or [{}])[0].get("message") or {}
    return fake_chunks(str(resp.get("model")), msg.get("content"), msg.get("tool_calls"), {})


class _Accumulator:
    """Rebuilds the answer of a stream (for the span, the cache and mirroring)."""

    __slots__ = ("finish", "finished", "id", "model", "seen", "text", "tools", "usage")

    def __init__(self) -> None:
        self.text: dict[int, list[str]] = {}
        self.tools: dict[int, dict[int, dict[str, Any]]] = {}
        self.finish: dict[int, str] = {}
        self.usage: Body | None = None
        self.seen = False
        self.finished = False
        self.id = ""
        self.model = ""

    def add(self, c: Body) -> None:
        self.seen = True
        self.id = c.get("id") or self.id
        self.model = c.get("model") or self.model
        if c.get("usage"):
            self.usage = c["usage"]
        for ch in c.get("choices") or ():
            i = ch.get("index", 0)
            delta = ch.get("delta") or {}
            if delta.get("content"):
                self.text.setdefault(i, []).append(delta["content"])
            for tc in delta.get("tool_calls") or ():
                slot = self.tools.setdefault(i, {}).setdefault(
                    tc.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] = fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
            if ch.get("finish_reason"):
                self.finish[i] = ch["finish_reason"]
                self.finished = True

    def completion(self, model: str) -> Body:
        idx = sorted(set(self.text) | set(self.tools) | set(self.finish)) or [0]
        choices = []
        for i in idx:
            msg: Body = {"role": "assistant", "content": "".join(self.text.get(i, [])) or None}
            if i in self.tools:
                msg["tool_calls"] = [self.tools[i][k] for k in sorted(self.tools[i])]
            choices.append({"index": i, "message": msg, "finish_reason": self.finish.get(i)})
        return {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model or model,
            "choices": choices,
            "usage": self.usage,
        }


def load_gateway(settings: Any, **kw: Any) -> Gateway:
    """A gateway for loaded :class:`keel.settings.Settings` (hot reload follows its source)."""
    try:
        return Gateway(settings.gateway, source=settings.source, **kw)
    except ProviderError as e:  # pragma: no cover - config-time provider errors
        raise ConfigError(str(e)) from None
