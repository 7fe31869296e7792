"""Exact response cache: the same request in the same scope gets the stored answer.

The key is a SHA-256 over the scope (tenant, route, model, prompt version) and the whole
normalised request: every body field that can change the answer counts (messages, tools,
tool_choice, temperature, response_format, seed, ...); only transport and bookkeeping fields
(``stream``, ``stream_options``, ``user``, ``metadata``, ...) and ``null`` values are left out.
The tenant (``CacheScope.project_id``) is always part of the key, so two projects never share
an entry::

    cache = ExactCache(ttl_s=600)                      # in-process LRU
    cache = ExactCache(RedisCacheBackend("redis://127.0.0.1:6379/0"))   # shared by replicas
    hit = await cache.lookup(scope, body)              # CacheHit | None
    await cache.store(scope, body, response)           # a chat.completion dict

Streaming requests are cached in their assembled form: wrap the upstream chunks with
:func:`record_stream` (it yields them unchanged and stores the assembled completion only after
a clean finish), and answer a hit on a streaming request with :func:`replay_stream`.

A cache backend that fails (Redis down) is bypassed, never an error: lookups miss, stores are
dropped, and ``stats["errors"]`` counts it.

Per request, :func:`cache_policy` reads the client's wishes from the request headers (HTTP
semantics): ``Cache-Control: no-cache`` (or ``max-age=0``) skips the lookup but stores the fresh
answer; ``Cache-Control: no-store`` neither reads nor writes; ``x-keel-cache: off`` is the same
as ``no-store`` and ``x-keel-cache: refresh`` the same as ``no-cache``. Both caches (exact and
semantic) obey it. :func:`build_exact_cache` builds the cache from the ``[gateway.cache]`` table
(``backend = "memory" | "redis"``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from keel.errors import ConfigError
from keel.gateway.provider import Body, CacheHit, CacheScope

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Request fields that never change what the model answers.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "extra_headers",
        "timeout",
    }
)
# Finish reasons whose answers are complete enough to serve again.
CACHEABLE_FINISH = frozenset({"stop", "tool_calls", "length", "function_call"})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What one request allows the caches to do: ``read`` (look up) and ``write`` (store)."""

    read: bool = True
    write: bool = True


CACHE_DEFAULT = CachePolicy(True, True)
CACHE_REFRESH = CachePolicy(False, True)  # no-cache: bypass the lookup, store the fresh answer
CACHE_OFF = CachePolicy(False, False)  # no-store: neither read nor write
OPT_OUT_HEADER = "x-keel-cache"


def _header(headers: Any, name: str) -> str | None:
    # Starlette headers and the gateway's own header dict are case-insensitive / lower-case;
    # a plain dict from a library caller may use the canonical spelling ("Cache-Control").
    v = headers.get(name)
    if v is None:
        v = headers.get(name.title())
    return None if v is None else str(v)


def cache_policy(headers: Any) -> CachePolicy:
    """The cache policy of a request from its headers (``None`` → read and write).

    ``Cache-Control: no-store`` → :data:`CACHE_OFF`; ``no-cache`` or ``max-age=0`` →
    :data:`CACHE_REFRESH`; ``x-keel-cache: off`` (or ``no-store``, ``bypass``) →
    :data:`CACHE_OFF`; ``x-keel-cache: refresh`` (or ``no-cache``) → :data:`CACHE_REFRESH`.
    The stricter of the two headers wins.
    """
    if headers is None:
        return CACHE_DEFAULT
    policy = CACHE_DEFAULT
    cc = _header(headers, "cache-control")
    if cc:
        for part in cc.lower().split(","):
            name, _, value = part.strip().partition("=")
            name = name.strip()
            if name == "no-store":
                return CACHE_OFF
            if name == "no-cache" or (name == "max-age" and value.strip().strip('"') == "0"):
                policy = CACHE_REFRESH
    opt = _header(headers, OPT_OUT_HEADER)
    if opt:
        opt = opt.strip().lower()
        if opt in ("off", "no-store", "bypass", "0", "false"):
            return CACHE_OFF
        if opt in ("refresh", "no-cache"):
            policy = CACHE_REFRESH
    return policy


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def normalize_request(request: Body) -> Body:
    """The request as it counts for caching: ignored fields and ``null`` values removed."""
    return {k: _strip(v) for k, v in request.items() if k not in IGNORED_FIELDS and v is not None}


def scope_bytes(scope: CacheScope) -> bytes:
    """A canonical encoding of a scope (the tenant first, never optional)."""
    if not scope.project_id:
        raise ValueError("a cache scope needs a project_id (the tenant)")
    return orjson.dumps(
        [scope.project_id, scope.route, scope.model, scope.prompt_version], option=0
    )


def request_key(scope: CacheScope, request: Body) -> str:
    """Hex SHA-256 of the scope and the normalised request (sorted keys, compact JSON)."""
    h = hashlib.sha256(scope_bytes(scope))
    h.update(b"\x1e")
    h.update(orjson.dumps(normalize_request(request), option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def is_cacheable(response: Body) -> bool:
    """True for a complete ``chat.completion`` (every choice finished for a normal reason)."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(isinstance(c, dict) and c.get("finish_reason") in CACHEABLE_FINISH for c in choices)


class CacheBackend(Protocol):
    """Bytes by key with a time to live. Errors may be raised; the cache bypasses them."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store a value that expires after ``ttl_s`` seconds."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix``; return how many."""
        ...


class MemoryCacheBackend:
    """An in-process LRU with per-entry expiry, bounded by entries and bytes."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired (expired entries are dropped)."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                del self._data[key]
                self._bytes -= len(item[1])
                return None
            self._data.move_to_end(key)
            return item[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store; evicts least recently used entries beyond the bounds."""
        if len(value) > self._max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._data[key] = (self._clock() + ttl_s, value)
            self._bytes += len(value)
            while len(self._data) > self._max_entries or self._bytes > self._max_bytes:
                _, (_, v) = self._data.popitem(last=False)
                self._bytes -= len(v)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix``."""
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for k in doomed:
                self._bytes -= len(self._data.pop(k)[1])
        return len(doomed)


class RedisCacheBackend:
    """Entries in Redis (``SET … PX``), shared by every gateway replica."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Redis | None = None,
        socket_timeout_s: float = 0.25,
    ) -> None:
        from redis.asyncio import Redis as _Redis

        self._redis: Redis = client or _Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )

    async def get(self, key: str) -> bytes | None:
        """The value, or None."""
        v = await self._redis.get(key)
        if v is None:
            return None
        return v.encode() if isinstance(v, str) else bytes(v)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store with a millisecond expiry."""
        await self._redis.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix`` (SCAN, not KEYS)."""
        n = 0
        async for k in self._redis.scan_iter(match=prefix + "*", count=500):
            n += int(await self._redis.delete(k))
        return n

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def _tenant_part(project_id: str) -> str:
    if project_id.replace("_", "").replace("-", "").isalnum() and len(project_id) <= 64:
        return project_id
    return hashlib.sha256(project_id.encode()).hexdigest()[:32]


class ExactCache:
    """Exact-match cache of ``chat.completion`` responses.

    ``ttl_s`` is the default time to live; ``namespace`` prefixes backend keys
    (``<namespace><project_id>:<sha256>``), so one tenant's entries can be dropped with
    :meth:`clear`. ``stats`` counts hits, misses, stores and backend errors.
    """

    def __init__(
        self,
        backend: CacheBackend | None = None,
        *,
        ttl_s: float = 3600.0,
        namespace: str = "keel:cache:",
    ) -> None:
        self.backend: CacheBackend = backend if backend is not None else MemoryCacheBackend()
        self.ttl_s = ttl_s
        self.namespace = namespace
        self.stats = {"hits": 0, "misses": 0, "stores": 0, "errors": 0}

    def key(self, scope: CacheScope, request: Body) -> str:
        """The backend key of a request in a scope."""
        return f"{self.namespace}{_tenant_part(scope.project_id)}:{request_key(scope, request)}"

    async def lookup(self, scope: CacheScope, request: Body) -> CacheHit | None:
        """The cached answer for this exact request in this scope, or None."""
        try:
            raw = await self.backend.get(self.key(scope, request))
        except Exception:
            self.stats["errors"] += 1
            return None
        if raw is None:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return CacheHit(response=orjson.loads(raw), similarity=None)

    async def store(
        self, scope: CacheScope, request: Body, response: Body, *, ttl_s: float | None = None
    ) -> bool:
        """Store a complete response; returns False when it was not cacheable or not stored."""
        if not is_cacheable(response):
            return False
        try:
            await self.backend.set(
                self.key(scope, request),
                orjson.dumps(response),
                self.ttl_s if ttl_s is None else ttl_s,
            )
        except Exception:
            self.stats["errors"] += 1
            return False
        self.stats["stores"] += 1
        return True

    async def clear(self, project_id: str) -> int:
        """Drop every entry of one tenant; returns how many."""
        return await self.backend.delete_prefix(f"{self.namespace}{_tenant_part(project_id)}:")


CACHE_CONFIG_KEYS = frozenset(
    {"backend", "redis_url", "namespace", "ttl_s", "max_entries", "max_bytes", "socket_timeout_s"}
)


def build_exact_cache(config: dict[str, Any] | None = None) -> ExactCache:
    """An :class:`ExactCache` from the ``[gateway.cache]`` table of ``keel.toml``.

    Keys: ``backend`` (``"memory"`` default, or ``"redis"`` so replicas share entries),
    ``redis_url`` (default ``redis://127.0.0.1:6379/0``), ``namespace`` (``keel:cache:``),
    ``ttl_s`` (3600; a route's ``cache.ttl_s`` overrides it), ``max_entries`` (10,000) and
    ``max_bytes`` (256 MiB) for the memory backend, ``socket_timeout_s`` (0.25) for Redis.
    """
    cfg = dict(config or {})
    unknown = set(cfg) - CACHE_CONFIG_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) in gateway.cache: {', '.join(sorted(unknown))}")
    backend_name = cfg.get("backend", "memory")
    backend: CacheBackend
    if backend_name == "memory":
        backend = MemoryCacheBackend(
            max_entries=int(cfg.get("max_entries", 10_000)),
            max_bytes=int(cfg.get("max_bytes", 256 * 1024 * 1024)),
        )
    elif backend_name == "redis":
        backend = RedisCacheBackend(
            str(cfg.get("redis_url", "redis://127.0.0.1:6379/0")),
            socket_timeout_s=float(cfg.get("socket_timeout_s", 0.25)),
        )
    else:
        raise ConfigError(
            f"gateway.cache.backend must be 'memory' or 'redis', not {backend_name!r}"
        )
    return ExactCache(
        backend,
        ttl_s=float(cfg.get("ttl_s", 3600.0)),
        namespace=str(cfg.get("namespace", "keel:cache:")),
    )


# --------------------------------------------------------------------------- streaming


class StreamAssembler:
    """Builds a ``chat.completion`` from ``chat.completion.chunk`` dicts as they pass."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.usage: Body | None = None
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Body) -> None:
        """Fold one chunk in."""
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        self.system_fingerprint = self.system_fingerprint or chunk.get("system_fingerprint")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for ch in chunk.get("choices") or ():
            st = self._choices.setdefault(
                int(ch.get("index", 0)),
                {"role": None, "content": [], "refusal": [], "tools": {}, "finish": None},
            )
            delta = ch.get("delta") or {}
            if delta.get("role"):
                st["role"] = delta["role"]
            if delta.get("content"):
                st["content"].append(delta["content"])
            if delta.get("refusal"):
                st["refusal"].append(delta["refusal"])
            for tc in delta.get("tool_calls") or ():
                t = st["tools"].setdefault(
                    int(tc.get("index", 0)),
                    {"id": None, "type": "function", "name": "", "args": []},
                )
                if tc.get("id"):
                    t["id"] = tc["id"]
                if tc.get("type"):
                    t["type"] = tc["type"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    t["name"] += fn["name"]
                if fn.get("arguments"):
                    t["args"].append(fn["arguments"])
            if ch.get("finish_reason"):
                st["finish"] = ch["finish_reason"]

    def result(self) -> Body:
        """The assembled ``chat.completion``."""
        choices = []
        for idx in sorted(self._choices):
            st = self._choices[idx]
            msg: Body = {
                "role": st["role"] or "assistant",
                "content": "".join(st["content"]) if st["content"] else None,
            }
            if st["refusal"]:
                msg["refusal"] = "".join(st["refusal"])
            if st["tools"]:
                msg["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": t["type"],
                        "function": {"name": t["name"], "arguments": "".join(t["args"])},
                    }
                    for _, t in sorted(st["tools"].items())
                ]
            choices.append(
                {"index": idx, "message": msg, "finish_reason": st["finish"], "logprobs": None}
            )
        out: Body = {
            "id": self.id or "chatcmpl-cached",
            "object": "chat.completion",
            "created": self.created or int(time.time()),
            "model": self.model or "",
            "choices": choices,
        }
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        if self.usage:
            out["usage"] = self.usage
        return out


async def record_stream(
    chunks: AsyncIterator[Body], on_complete: Callable[[Body], Awaitable[Any]]
) -> AsyncIterator[Body]:
    """Yield ``chunks`` unchanged; after a clean end, call ``on_complete(assembled)``.

    Nothing is stored when the upstream stream raises (cut, stall) or the consumer stops
    early, so a truncated answer is never cached::

        async for chunk in record_stream(upstream, lambda r: cache.store(scope, body, r)):
            yield chunk
    """
    asm = StreamAssembler()
    async for chunk in chunks:
        asm.add(chunk)
        yield chunk
    result = asm.result()
    if is_cacheable(result):
        await on_complete(result)


def replay_stream(
    response: Body, *, piece_chars: int = 64, include_usage: bool = False
) -> Iterator[Body]:
    """``chat.completion.chunk`` dicts that re-tell a stored ``chat.completion``.

    The first chunk carries the role, content follows in pieces of ``piece_chars``
    characters, tool calls as one delta each, then the finish reason; with
    ``include_usage`` a last chunk with ``choices: []`` and the stored usage.
    """
    base = {
        "id": response.get("id", "chatcmpl-cached"),
        "object": "chat.completion.chunk",
        "created": response.get("created", int(time.time())),
        "model": response.get("model", ""),
    }
    if response.get("system_fingerprint"):
        base["system_fingerprint"] = response["system_fingerprint"]

    def chunk(index: int, delta: Body, finish: str | None = None) -> Body:
        return {
            **base,
            "choices": [
                {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            ],
        }

    for ch in response.get("choices") or ():
        idx = int(ch.get("index", 0))
        msg = ch.get("message") or {}
        yield chunk(idx, {"role": msg.get("role", "assistant"), "content": ""})
        content = msg.get("content") or ""
        for i in range(0, len(content), max(1, piece_chars)):
            yield chunk(idx, {"content": content[i : i + piece_chars]})
        if msg.get("refusal"):
            yield chunk(idx, {"refusal": msg["refusal"]})
        for ti, tc in enumerate(msg.get("tool_calls") or ()):
            fn = tc.get("function") or {}
            yield chunk(
                idx,
                {
                    "tool_calls": [
                        {
                            "index": ti,
                            "id": tc.get("id"),
                            "type": tc.get("type", "function"),
                            "function": {
                                "name": fn.get("name", ""),
                                "arguments": fn.get("arguments", ""),
                            },
                        }
                    ]
                },
            )
        yield chunk(idx, {}, ch.get("finish_reason") or "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": response.get("usage")}
