"""ToolSelectionAccuracy: did the model call the right tools with the right arguments?

Two modes:

* with ``expected_tool_calls``: each expected call is matched to an actual call of the same tool
  (best argument match); a matched call earns 1.0 when its arguments match (``subset``: every
  expected argument present and equal after normalization; ``exact``: no extra arguments
  either), partial credit for partially matching arguments, and extra calls cost precision
  unless ``allow_extra=True``. ``expected_tool_calls=[]`` means "no tool should be called".
* with ``available_tools`` only: each call must name an offered tool and its arguments must
  validate against that tool's parameter schema; with a ``query``, a call is also flagged when
  another tool's name and description match the query clearly better (a lexical heuristic).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from keel.evals.base import EvalResult, Evaluator


def normalize_tool_call(call: Any) -> dict[str, Any]:
    """A tool call from a ToolCall model, an OpenAI ``tool_calls`` item or a plain dict."""
    if hasattr(call, "model_dump"):
        call = call.model_dump()
    if isinstance(call, str):
        return {"name": call, "arguments": None}
    if not isinstance(call, Mapping):
        raise TypeError(f"cannot read a tool call from {type(call).__name__}")
    fn = call.get("function") if isinstance(call.get("function"), Mapping) else None
    name = (fn or call).get("name")
    args = (fn or call).get("arguments", call.get("args", call.get("input")))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            args = {"__raw__": args}
    return {"name": str(name) if name is not None else "", "arguments": args}


def normalize_tool(tool: Any) -> dict[str, Any]:
    """An available tool from an OpenAI ``tools`` item or a ``{name, description, parameters}`` dict."""
    if hasattr(tool, "model_dump"):
        tool = tool.model_dump()
    fn = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
    params = fn.get("parameters") or fn.get("input_schema") or fn.get("inputSchema") or {}
    return {
        "name": str(fn.get("name", "")),
        "description": str(fn.get("description") or ""),
        "parameters": params,
    }


def _norm_value(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip().casefold()
        try:
            f = float(s)
            return f if math.isfinite(f) else s
        except ValueError:
            return re.sub(r"\s+", " ", s)
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): _norm_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm_value(x) for x in v]
    return v


def argument_match(expected: Any, actual: Any, *, exact: bool = False) -> tuple[float, list[str]]:
    """Share of expected arguments matched (and the mismatching keys)."""
    if expected is None:
        return 1.0, []
    if not isinstance(expected, Mapping):
        return (1.0, []) if _norm_value(expected) == _norm_value(actual) else (0.0, ["<arguments>"])
    actual = actual if isinstance(actual, Mapping) else {}
    keys = list(expected)
    bad = [k for k in keys if k not in actual or _norm_value(expected[k]) != _norm_value(actual[k])]
    extra = [k for k in actual if k not in expected] if exact else []
    total = len(keys) + len(extra)
    if total == 0:
        return 1.0, []
    return (total - len(bad) - len(extra)) / total, bad + [f"+{k}" for k in extra]


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "is",
        "are",
        "be",
        "with",
        "by",
        "from",
        "at",
        "as",
        "it",
        "this",
        "that",
        "what",
        "how",
        "my",
        "me",
        "i",
        "you",
        "your",
        "please",
        "can",
        "could",
        "would",
    ]
)


def _words(text: str) -> set[str]:
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).replace("_", " ").lower()
    return {w[:5] for w in _WORD.findall(text) if w not in _STOP}


class ToolSelectionAccuracy(Evaluator):
    """Tool calls against expected calls, or against the available tool descriptions."""

    name = "ToolSelectionAccuracy"
    aliases = ("ToolCallAccuracy",)
    required_inputs = frozenset({"tool_calls"})
    optional_inputs = frozenset({"expected_tool_calls", "available_tools", "query"})
    default_threshold = 1.0

    def __init__(
        self,
        *,
        threshold: float | None = None,
        check_arguments: bool = True,
        arguments: str = "subset",
        allow_extra: bool = False,
        ordered: bool = False,
    ) -> None:
        if arguments not in ("subset", "exact"):
            raise ValueError("arguments must be 'subset' or 'exact'")
        super().__init__(
            threshold=threshold,
            check_arguments=check_arguments,
            arguments=arguments,
            allow_extra=allow_extra,
            ordered=ordered,
        )
        self.check_arguments = check_arguments
        self.exact = arguments == "exact"
        self.allow_extra = allow_extra
        self.ordered = ordered

    def _evaluate(
        self,
        *,
        tool_calls: Any,
        expected_tool_calls: Any = None,
        available_tools: Any = None,
        query: Any = None,
        **_: Any,
    ) -> EvalResult:
        calls = [normalize_tool_call(c) for c in (tool_calls or [])]
        if expected_tool_calls is not None:
            return self._against_expected(
                calls, [normalize_tool_call(c) for c in expected_tool_calls]
            )
        if available_tools is not None:
            return self._against_tools(calls, [normalize_tool(t) for t in available_tools], query)
        raise ValueError("ToolSelectionAccuracy needs expected_tool_calls or available_tools")

    def _against_expected(
        self, calls: list[dict[str, Any]], expected: list[dict[str, Any]]
    ) -> EvalResult:
        if not expected:
            ok = not calls
            return EvalResult(
                1.0 if ok else 0.0,
                "no tool call expected and none made"
                if ok
                else f"no tool call expected, got {[c['name'] for c in calls]}",
            )
        used: set[int] = set()
        credits: list[float] = []
        per_call: list[dict[str, Any]] = []
        cursor = 0
        for exp in expected:
            best_i, best_credit, best_bad = -1, -1.0, ["<missing>"]
            start = cursor if self.ordered else 0
            for i in range(start, len(calls)):
                if i in used or calls[i]["name"] != exp["name"]:
                    continue
                credit, bad = (
                    argument_match(exp["arguments"], calls[i]["arguments"], exact=self.exact)
                    if self.check_arguments
                    else (1.0, [])
                )
                if credit > best_credit:
                    best_i, best_credit, best_bad = i, credit, bad
            if best_i >= 0:
                used.add(best_i)
                cursor = best_i + 1
            credits.append(max(best_credit, 0.0))
            per_call.append(
                {
                    "expected": exp["name"],
                    "matched": best_i >= 0,
                    "credit": max(best_credit, 0.0),
                    "mismatched_arguments": best_bad if best_i >= 0 else [],
                }
            )
        extra = [c["name"] for i, c in enumerate(calls) if i not in used]
        denom = len(expected) if self.allow_extra else max(len(expected), len(calls))
        value = sum(credits) / denom
        missing = [p["expected"] for p in per_call if not p["matched"]]
        wrong_args = [p["expected"] for p in per_call if p["matched"] and p["credit"] < 1]
        parts = []
        if missing:
            parts.append(f"missing calls {missing}")
        if wrong_args:
            parts.append(f"wrong arguments for {wrong_args}")
        if extra and not self.allow_extra:
            parts.append(f"unexpected calls {extra}")
        reason = "; ".join(parts) or "all expected tool calls made with matching arguments"
        return EvalResult(value, reason, {"calls": per_call, "extra_calls": extra})

    def _against_tools(
        self, calls: list[dict[str, Any]], tools: list[dict[str, Any]], query: Any
    ) -> EvalResult:
        by_name = {t["name"]: t for t in tools}
        if not calls:
            return EvalResult(0.0, "no tool was called", {"calls": []})
        per_call: list[dict[str, Any]] = []
        qwords = _words(str(query)) if query else set()
        tool_words = {t["name"]: _words(t["name"] + " " + t["description"]) for t in tools}
        for c in calls:
            tool = by_name.get(c["name"])
            if tool is None:
                per_call.append(
                    {"name": c["name"], "credit": 0.0, "problem": "not an available tool"}
                )
                continue
            credit, problems = 1.0, []
            if self.check_arguments:
                errs = _schema_errors(tool["parameters"], c["arguments"])
                if errs:
                    credit, problems = 0.5, errs
            if qwords and len(tools) > 1:
                scores = {n: len(qwords & w) / (len(w) ** 0.5 or 1) for n, w in tool_words.items()}
                best = max(scores, key=lambda n: scores[n])
                if best != c["name"] and scores[best] > 0 and scores[best] >= 2 * scores[c["name"]]:
                    credit = min(credit, 0.5)
                    problems.append(f"query matches tool {best!r} better")
            per_call.append({"name": c["name"], "credit": credit, "problems": problems})
        value = sum(p["credit"] for p in per_call) / len(per_call)
        bad = [p for p in per_call if p["credit"] < 1]
        reason = (
            "every call names an available tool with valid arguments"
            if not bad
            else "; ".join(
                f"{p['name']}: {p.get('problem') or ', '.join(p['problems'])}" for p in bad
            )
        )
        return EvalResult(value, reason, {"calls": per_call})


def _schema_errors(schema: Any, arguments: Any) -> list[str]:
    if not isinstance(schema, Mapping) or not schema:
        return []
    args = arguments if arguments is not None else {}
    if isinstance(args, Mapping) and "__raw__" in args:
        return ["arguments are not valid JSON"]
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - fall back to required keys only
        req = schema.get("required", [])
        return [
            f"missing argument {k!r}" for k in req if not isinstance(args, Mapping) or k not in args
        ]
    cls = jsonschema.validators.validator_for(schema)
    return [e.message for e in cls(schema).iter_errors(args)][:10]


EVALUATORS = [ToolSelectionAccuracy]
