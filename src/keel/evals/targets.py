"""Targets of an eval run, built from a suite: prompt -> model/route, model, Python callable.

Also resolves the suite's dataset into rows and its evaluators into instances, and records
what each resolved to (prompt version, dataset version, model or route) so the EvalRun pins
them.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from keel.core.datasets import Row
from keel.core.hashing import content_hash
from keel.core.prompts import PromptVersion
from keel.errors import ConfigError, InvalidInputError, KeelError, NotFoundError
from keel.evals.base import Evaluator
from keel.evals.runner import NamedEvaluator, TargetOutput
from keel.evals.suite import DatasetSpec, EvaluatorSpec, TargetSpec, split_ref
from keel.gateway.provider import Body, CallContext, Provider

_row_seq = itertools.count()


# --------------------------------------------------------------------------- evaluators


def build_evaluators(specs: list[EvaluatorSpec]) -> list[NamedEvaluator]:
    """Instantiate each evaluator (registry name or ``module:Class``)."""
    out = []
    for spec in specs:
        try:
            ev = _build_evaluator(spec)
        except KeelError as e:
            raise ConfigError(f"evaluator {spec.name!r}: {e.message}", hint=e.hint)
        if spec.threshold is not None:
            ev.threshold = float(spec.threshold)
        out.append(NamedEvaluator(ev, alias=spec.alias, inputs=dict(spec.inputs)))
    return out


def _build_evaluator(spec: EvaluatorSpec) -> Evaluator:
    if ":" in spec.name:
        obj = import_object(spec.name)
        if isinstance(obj, type) and issubclass(obj, Evaluator):
            try:
                return obj(**spec.config)
            except TypeError as e:
                raise ConfigError(f"bad options for {spec.name}: {e}")
        if isinstance(obj, Evaluator):
            return obj
        raise ConfigError(f"{spec.name} is not an Evaluator class or instance")
    from keel.evals.registry import create_evaluator

    if spec.short is not None:
        return create_evaluator({spec.name: spec.short})
    return create_evaluator({"name": spec.name, **spec.config})


def import_object(path: str) -> Any:
    """``package.module:attr.sub`` -> the object; :class:`ConfigError` when it cannot."""
    mod_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {mod_name!r}: {e}", hint="is it on PYTHONPATH?")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{mod_name!r} has no attribute {attr!r}")
    return obj


# --------------------------------------------------------------------------- datasets


@dataclass
class ResolvedDataset:
    """Rows and what they are."""

    rows: list[Row]
    name: str | None = None
    version: int | None = None
    content_hash: str | None = None


def load_dataset(spec: DatasetSpec, store: Any, project_id: str) -> ResolvedDataset:
    """Rows from the store (``name@version``), a file, or the suite itself."""
    if spec.rows is not None:
        rows = _with_ids(spec.rows)
        res = ResolvedDataset(rows=rows, name=None, version=None)
    elif spec.path is not None:
        res = ResolvedDataset(rows=_with_ids(read_rows_file(spec.path)), name=Path(spec.path).stem)
    else:
        assert spec.name is not None
        ds_store = getattr(store, "datasets", None)
        if ds_store is None:
            raise ConfigError("this store has no datasets area (is the datasets module installed?)")
        ds = ds_store.get_dataset(project_id, spec.name)
        version = spec.version or ds.latest_version
        if not version:
            raise NotFoundError(f"dataset {spec.name!r} has no versions yet")
        ds_store.get_version(ds.id, version)
        rows = list(ds_store.iter_rows(ds.id, version))
        res = ResolvedDataset(rows=rows, name=spec.name, version=version)
    if spec.split is not None:
        res.rows = [r for r in res.rows if r.split == spec.split]
    if spec.limit is not None:
        res.rows = res.rows[: spec.limit]
    ids = [r.id for r in res.rows]
    if len(set(ids)) != len(ids):
        raise ConfigError("dataset rows must have unique ids (a run pairs rows by id)")
    res.content_hash = content_hash([r.model_dump(mode="json") for r in res.rows])
    return res


def read_rows_file(path: str) -> list[Row]:
    """Rows from JSONL, JSON (a list) or YAML (a list)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"dataset file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".jsonl":
            items = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        elif p.suffix == ".json":
            items = orjson.loads(text)
        else:
            items = yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot parse rows: {e}")
    if not isinstance(items, list):
        raise ConfigError(f"{p}: expected a list of rows")
    try:
        return [Row.model_validate(i) for i in items]
    except ValueError as e:
        raise ConfigError(f"{p}: bad row: {e}")


def _with_ids(rows: list[Row]) -> list[Row]:
    """Rows without an id get their content hash (stable across runs, so pairing works)."""
    return [r if r.id else r.model_copy(update={"id": r.content_hash()[7:23]}) for r in rows]


# --------------------------------------------------------------------------- prompts


def resolve_prompt(store: Any, project_id: str, ref: str) -> tuple[PromptVersion, str | None]:
    """``name@3`` / ``name@canary`` / ``name`` (latest) -> (version, label or None)."""
    split_ref(ref, "prompt")
    res = _registry(store).resolve(project_id, ref)
    return res.version, res.label if res.label != "latest" else None


def _registry(store: Any) -> Any:
    if getattr(store, "prompts", None) is None:
        raise ConfigError("this store has no prompts area")
    from keel.prompts.registry import PromptRegistry

    return PromptRegistry(store, guards=[])


def render_prompt(
    version: PromptVersion, variables: dict[str, Any], resolver: Any = None
) -> list[dict[str, Any]]:
    """The chat messages of ``version`` rendered with ``variables`` by the registry's renderer
    (sandboxed Jinja, includes through ``resolver``, missing/extra variable checks)."""
    from keel.prompts import template

    out = template.render(version.content, variables, resolver, name=version.name)
    if isinstance(out, str):
        return [{"role": "user", "content": out}]
    return [dict(m) for m in out]


def row_variables(row: Row, mapping: dict[str, str]) -> dict[str, Any]:
    """Prompt variables for a row: its input mapping (or ``input``), plus mapped fields."""
    from keel.evals.runner import resolve_source

    inp = row.input
    if isinstance(inp, dict):
        variables = dict(inp)
    elif inp is None:
        variables = {}
    else:
        variables = {"input": inp}
    for var, src in mapping.items():
        variables[var] = resolve_source(src, row, None)
    return variables


# --------------------------------------------------------------------------- providers


def resolve_provider(spec: TargetSpec, settings: Any = None) -> tuple[Provider, str]:
    """The Provider that serves the target's model or route, and its rate-limit key."""
    if spec.base_url:
        from keel.gateway.providers.http import HttpClient
        from keel.gateway.providers.openai import OpenAICompatibleProvider
        from keel.settings import resolve_secret

        api_key = resolve_secret(spec.api_key) if spec.api_key else None
        return (
            OpenAICompatibleProvider(
                "endpoint", base_url=spec.base_url, api_key=api_key, http=HttpClient()
            ),
            "endpoint",
        )
    name = spec.model or spec.route or ""
    if spec.model and spec.model.startswith("fake:"):
        from keel.gateway.providers.fake import FakeProvider

        return FakeProvider(), "fake"
    if spec.model and spec.model.startswith("local:"):
        from keel.gateway.providers.local import LocalProvider

        return LocalProvider(), "local"
    built = _gateway_provider(spec, settings)
    if built is None:  # pragma: no cover - the gateway ships with Keel
        raise ConfigError(f"cannot reach {name!r}: the gateway module is not installed")
    key = name.split("/", 1)[0] if "/" in name else name.split(":", 1)[0]
    return built, key


def _gateway_provider(spec: TargetSpec, settings: Any) -> Provider | None:
    """Routes and configured models go through Keel's own gateway pipeline (``[gateway]``):
    the same routing, fallbacks, retries and caches production traffic gets."""
    try:
        from keel.gateway.service import Gateway
    except ImportError:  # pragma: no cover
        return None
    raw = dict(getattr(settings, "gateway", None) or {}) if settings is not None else {}
    raw["reload_interval_s"] = 0
    try:
        gw = Gateway(raw)
        gw.snapshot.resolve(str(spec.route or spec.model))
    except KeelError as e:
        what = f"route {spec.route!r}" if spec.route else f"model {spec.model!r}"
        raise ConfigError(
            f"the gateway cannot serve {what}: {e.message}",
            hint="configure it under [gateway] in keel.toml, use fake:*/local:* models, "
            "or set target.base_url to an OpenAI-compatible endpoint",
        )
    return GatewayProvider(gw)  # type: ignore[return-value]


class GatewayProvider:
    """A :class:`Gateway` seen as a Provider (for eval targets)."""

    name = "gateway"

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """Through the whole gateway pipeline."""
        out: Body = await self.gateway.chat(body, project_id=ctx.project_id, key=None)
        return out

    def models(self) -> list[str]:
        """What the gateway serves."""
        out: list[str] = self.gateway.models()
        return out

    async def aclose(self) -> None:
        """Stop the gateway's background work and close its HTTP session."""
        await self.gateway.close()


def completion_text(resp: Body) -> Any:
    """The answer of a ``chat.completion``: text, or tool calls when there is no text."""
    choices = resp.get("choices") or []
    if not choices:
        return None
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    if content:
        return content
    if msg.get("tool_calls"):
        return {"tool_calls": msg["tool_calls"]}
    return content


def _usage(resp: Body) -> tuple[int | None, int | None]:
    u = resp.get("usage") or {}
    return u.get("prompt_tokens"), u.get("completion_tokens")


def _price(model: str, inp: int | None, out: int | None) -> float | None:
    """Cost from genai-prices when it knows the model (None otherwise)."""
    if (not inp and not out) or model in _UNPRICED:
        return None
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    try:
        p = calc_price(Usage(input_tokens=inp or 0, output_tokens=out or 0), model_ref=model)
        return float(p.total_price)
    except Exception:
        if len(_UNPRICED) < 1000:
            _UNPRICED.add(model)  # unknown to the price table: do not look it up per row
        return None


_UNPRICED: set[str] = set()


# --------------------------------------------------------------------------- targets


@dataclass
class ModelTarget:
    """Rows (messages or text) sent as they are, or a prompt rendered per row, to a provider."""

    spec: TargetSpec
    provider: Provider
    provider_key: str
    project_id: str = "default"
    prompt: PromptVersion | None = None
    prompt_label: str | None = None
    resolver: Any = None
    cacheable: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.spec.label()

    def prepare(self, row: Row, repeat: int) -> dict[str, Any]:
        """The Chat Completions body for this row."""
        body: dict[str, Any] = {}
        if self.prompt is not None:
            cfg = dict(self.prompt.content.model_config_)
            body.update({k: v for k, v in cfg.items() if k != "model"})
            messages = render_prompt(
                self.prompt, row_variables(row, self.spec.variables), self.resolver
            )
        else:
            inp = row.input
            if isinstance(inp, list):
                messages = inp
            elif isinstance(inp, dict) and isinstance(inp.get("messages"), list):
                messages = inp["messages"]
            elif isinstance(inp, str):
                messages = [{"role": "user", "content": inp}]
            else:
                raise InvalidInputError(
                    "a model target without a prompt needs row input as text or messages"
                )
        body.update(self.spec.params)
        body["model"] = self.spec.route or self.spec.model
        body["messages"] = messages
        return body

    async def aclose(self) -> None:
        """Close the provider's HTTP session (inside the loop that opened it)."""
        own = getattr(self.provider, "aclose", None)
        close = own if own is not None else getattr(getattr(self.provider, "http", None), "close", None)
        if close is not None:
            res = close()
            if inspect.isawaitable(res):
                await res

    async def call(self, row: Row, request: dict[str, Any]) -> TargetOutput:
        """Send through the provider."""
        ctx = CallContext(project_id=self.project_id)
        d = ctx.decision
        d.route = self.spec.route
        if self.prompt is not None:
            d.prompt_name, d.prompt_version = self.prompt.name, self.prompt.version
            d.prompt_label = self.prompt_label
        t0 = time.perf_counter()
        resp = await self.provider.chat(dict(request), ctx)
        latency = (time.perf_counter() - t0) * 1000
        inp, out = _usage(resp)
        cost = d.cost_usd
        if cost is None:
            cost = _price(str(resp.get("model") or request["model"]), inp, out)
        return TargetOutput(
            output=completion_text(resp),
            cost_usd=cost,
            input_tokens=inp,
            output_tokens=out,
            latency_ms=latency,
            messages=request["messages"],
        )


@dataclass
class PythonTarget:
    """An app or agent function called per row; the spans it emits are captured."""

    fn: Callable[..., Any]
    label: str
    capture: bool = True
    provider_key: str = "python"
    cacheable: bool = False
    name: str = ""
    _params: set[str] = field(default_factory=set)
    _var_kw: bool = False

    def __post_init__(self) -> None:
        self.name = f"python {self.label}"
        try:
            sig = inspect.signature(self.fn)
            self._params = set(sig.parameters)
            self._var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        except (TypeError, ValueError):
            pass

    def prepare(self, row: Row, repeat: int) -> dict[str, Any]:
        """The call's arguments (not cached: apps have side effects and state)."""
        return {"input": row.input, "repeat": repeat}

    def _args(self, row: Row) -> tuple[tuple[Any, ...], dict[str, Any]]:
        inp = row.input
        if isinstance(inp, dict) and inp and (self._var_kw or set(inp) <= self._params):
            return (), dict(inp)
        return (inp,), {}

    async def call(self, row: Row, request: dict[str, Any]) -> TargetOutput:
        """Call the function (async, or sync in a thread) inside a ``keel.eval.row`` span."""
        args, kwargs = self._args(row)
        key = f"{row.id}:{request.get('repeat', 0)}:{next(_row_seq)}"
        cap = None
        trace_id = None
        if self.capture:
            from opentelemetry import trace

            from keel.evals import capture

            cap = capture.install()
            token = capture.set_row(key)
        t0 = time.perf_counter()
        try:
            if self.capture:
                tracer = trace.get_tracer("keel.evals")
                with tracer.start_as_current_span(
                    "keel.eval.row", attributes={"keel.eval.row_id": row.id}
                ) as sp:
                    trace_id = format(sp.get_span_context().trace_id, "032x")
                    result = await self._invoke(args, kwargs)
            else:
                result = await self._invoke(args, kwargs)
        finally:
            if self.capture:
                capture.reset_row(token)
        latency = (time.perf_counter() - t0) * 1000
        spans = cap.take(key) if cap is not None else None
        output, cost, tin, tout = result, None, None, None
        if isinstance(result, dict) and ("output" in result or "response" in result):
            output = result.get("output", result.get("response"))
            cost = result.get("cost_usd")
        if spans:
            from keel.otlp.dialects import to_llm_call

            calls = [c for c in (to_llm_call(s) for s in spans) if c is not None]
            if calls:
                tin = sum(c.input_tokens or 0 for c in calls) or None
                tout = sum(c.output_tokens or 0 for c in calls) or None
                costs = [c.cost_usd for c in calls if c.cost_usd is not None]
                if cost is None and costs:
                    cost = sum(costs)
        return TargetOutput(
            output=output,
            cost_usd=cost,
            input_tokens=tin,
            output_tokens=tout,
            latency_ms=latency,
            trace=spans,
            trace_id=trace_id,
        )

    async def _invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(*args, **kwargs)
        res = await asyncio.to_thread(self.fn, *args, **kwargs)
        if inspect.isawaitable(res):
            return await res
        return res


@dataclass
class ResolvedTarget:
    """The target and what it pins."""

    target: Any
    prompt_name: str | None = None
    prompt_version: int | None = None
    prompt_label: str | None = None
    model: str | None = None
    route: str | None = None


def build_target(
    spec: TargetSpec, *, store: Any, project_id: str, settings: Any = None
) -> ResolvedTarget:
    """Resolve a suite target into a runnable one."""
    if spec.python:
        fn = import_object(spec.python)
        if not callable(fn):
            raise ConfigError(f"{spec.python} is not callable")
        return ResolvedTarget(PythonTarget(fn, spec.python, capture=spec.capture_traces))
    prompt, label, resolver = (None, None, None)
    if spec.prompt:
        prompt, label = resolve_prompt(store, project_id, spec.prompt)
        resolver = _registry(store).resolver(project_id)
    provider, key = resolve_provider(spec, settings)
    t = ModelTarget(
        spec,
        provider,
        key,
        project_id=project_id,
        prompt=prompt,
        prompt_label=label,
        resolver=resolver,
    )
    return ResolvedTarget(
        t,
        prompt_name=prompt.name if prompt else None,
        prompt_version=prompt.version if prompt else None,
        prompt_label=label,
        model=spec.model,
        route=spec.route,
    )
