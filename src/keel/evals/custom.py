"""Custom evaluators: a decorated Python function, or an LLM rubric written in YAML.

Function::

    @keel_evaluator(name="MentionsPolicy", inputs=["response"], threshold=1.0)
    def mentions_policy(response: str) -> bool:
        return "30 days" in response

    MentionsPolicy = mentions_policy          # the decorator returns an Evaluator class
    MentionsPolicy().evaluate(response="Refunds within 30 days.").passed   # True

The function receives the declared inputs as keywords and may return a bool, a number in
[0, 1], ``(value, reason)``, a dict ``{"score", "reason", "details", "passed"}`` or an
:class:`~keel.evals.base.EvalResult`. It is registered under ``name`` (``register=False`` to
skip).

Rubric (YAML)::

    name: Politeness
    rubric: The response is polite and does not blame the customer.
    inputs: [query, response]
    scale: [1, 5]
    threshold: 0.75
    model: local            # or {model: gpt-4o-mini, base_url: ..., api_key: env:OPENAI_API_KEY}

:func:`load_rubric` turns such a file (or a list under ``evaluators:``) into registered
:class:`~keel.evals.judge.LLMJudge` subclasses.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from keel.errors import InvalidInputError

from .base import INPUT_NAMES, EvalResult, Evaluator
from .judge import LLMJudge
from .registry import default_registry


def _to_result(out: Any) -> EvalResult:
    if isinstance(out, EvalResult):
        return out
    if isinstance(out, bool):
        return EvalResult(1.0 if out else 0.0, "passed" if out else "failed", passed=out)
    if isinstance(out, int | float):
        return EvalResult(float(out))
    if isinstance(out, tuple) and len(out) == 2:
        res = _to_result(out[0])
        res.reason = str(out[1])
        return res
    if isinstance(out, Mapping):
        v = out.get("score", out.get("value"))
        res = (
            _to_result(v)
            if v is not None
            else EvalResult(None, error="custom evaluator returned no score")
        )
        res.reason = str(out.get("reason", res.reason))
        res.details = dict(out.get("details") or {})
        if out.get("passed") is not None:
            res.passed = bool(out["passed"])
        return res
    raise TypeError(
        f"custom evaluator returned {type(out).__name__}; return a bool, number, tuple, dict or EvalResult"
    )


def keel_evaluator(
    *,
    name: str,
    inputs: Iterable[str],
    optional: Iterable[str] = (),
    threshold: float = 0.5,
    version: str = "1",
    higher_is_better: bool = True,
    register: bool = True,
) -> Callable[[Callable[..., Any]], type[Evaluator]]:
    """Turn a function into a registered Evaluator class (see the module docstring)."""
    req = frozenset(inputs)
    opt = frozenset(optional)
    bad = (req | opt) - INPUT_NAMES
    if bad:
        raise InvalidInputError(
            f"unknown inputs {sorted(bad)}", hint=f"inputs are {sorted(INPUT_NAMES)}"
        )

    def deco(fn: Callable[..., Any]) -> type[Evaluator]:
        def _evaluate(self: Evaluator, **kw: Any) -> EvalResult:
            return _to_result(fn(**kw))

        cls = type(
            name,
            (Evaluator,),
            {
                "name": name,
                "version": version,
                "required_inputs": req,
                "optional_inputs": opt,
                "default_threshold": threshold,
                "higher_is_better": higher_is_better,
                "_evaluate": _evaluate,
                "__doc__": fn.__doc__ or f"Custom evaluator {name}.",
                "__module__": fn.__module__,
                "func": staticmethod(fn),
            },
        )
        if register:
            default_registry().add(cls, replace=True)
        return cls

    return deco


def rubric_class(spec: Mapping[str, Any]) -> type[LLMJudge]:
    """An LLMJudge subclass with a rubric spec's options as defaults."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name or "rubric" not in spec:
        raise InvalidInputError("a rubric needs 'name' and 'rubric'")
    version = str(spec.pop("version", "1"))
    if "scale" in spec:
        spec["scale"] = tuple(spec["scale"])
    allowed = {
        "rubric",
        "inputs",
        "scale",
        "threshold",
        "model",
        "retries",
        "timeout",
        "max_tokens",
        "prompt_name",
    }
    unknown = set(spec) - allowed
    if unknown:
        raise InvalidInputError(
            f"unknown rubric keys {sorted(unknown)}", hint=f"allowed: {sorted(allowed)}"
        )
    defaults = spec

    def __init__(self: LLMJudge, **overrides: Any) -> None:
        opts = {**defaults, **overrides}
        rubric = opts.pop("rubric")
        LLMJudge.__init__(self, rubric, evaluator_name=name, **opts)

    return type(
        name,
        (LLMJudge,),
        {
            "name": name,
            "version": version,
            "__init__": __init__,
            "__doc__": f"Rubric evaluator {name}: {defaults['rubric']}",
        },
    )


def load_rubric(
    source: str | pathlib.Path | Mapping[str, Any], *, register: bool = True
) -> list[type[LLMJudge]]:
    """Rubric evaluator classes from a YAML file, YAML text or a mapping (one rubric, or a list
    under ``evaluators:``); registered in the default registry unless ``register=False``."""
    import yaml

    if isinstance(source, Mapping):
        data: Any = source
    else:
        p = pathlib.Path(str(source))
        text = p.read_text("utf-8") if "\n" not in str(source) and p.exists() else str(source)
        data = yaml.safe_load(text)
    items = data.get("evaluators") if isinstance(data, Mapping) and "evaluators" in data else [data]
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise InvalidInputError(
            "a rubric file holds one rubric mapping or a list under 'evaluators:'"
        )
    classes = [rubric_class(i) for i in items]
    if register:
        for c in classes:
            default_registry().add(c, replace=True)
    return classes
