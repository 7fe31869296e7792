"""TaskCompletion: did an agent run reach its goal?

Reads the run as steps (:mod:`keel.evals.steps`) from ``trace`` (a stored Trace, spans,
LlmCall views, chat messages or step dicts) or ``messages``; ``response`` overrides the final
answer. Four checks, each recorded in ``details``:

* ``final_answer`` - a non-empty final answer exists (no answer scores 0 outright);
* ``goal`` - with ``expected_output``: the share of its salient words (numbers, names, content
  words) found in the answer reaches ``goal_overlap``; without it: the answer is not a
  give-up ("I couldn't", "unable to") and shares content words with the ``query``;
* ``errors`` - no step failed without a later successful retry of the same tool;
* ``tool_results_used`` - each successful tool result shares salient words with a later
  model output, a later call's arguments or the final answer (a result nobody used suggests a
  lost thread).

The value is the mean of the applicable checks (goal, errors, tool use), capped by the goal
check (a run that misses its goal cannot average its way to a pass).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from keel.evals.base import EvalResult, Evaluator
from keel.evals.steps import Step, final_answer, steps_from_messages, steps_from_trace

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}|\d+(?:[.,]\d+)*")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "your",
        "with",
        "this",
        "that",
        "from",
        "have",
        "has",
        "had",
        "was",
        "were",
        "will",
        "would",
        "could",
        "should",
        "can",
        "may",
        "might",
        "about",
        "into",
        "over",
        "than",
        "then",
        "them",
        "they",
        "their",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "very",
        "just",
        "also",
        "been",
        "being",
        "does",
        "did",
        "doing",
        "done",
        "its",
        "it's",
        "our",
        "ours",
        "please",
        "thanks",
        "thank",
        "answer",
        "question",
        "tell",
        "give",
        "find",
        "get",
        "let",
        "make",
        "need",
        "want",
        "know",
    ]
)
_GIVE_UP = re.compile(
    r"\b(i\s+(?:was|am|'m)\s+(?:not\s+able|unable)|i\s+could(?:\s+not|n't)|i\s+can(?:not|'t)\s+"
    r"(?:complete|finish|find|access|do)|unable\s+to\s+(?:complete|find|access|retrieve)|"
    r"(?:task|request)\s+(?:failed|could\s+not)|something\s+went\s+wrong|an\s+error\s+occurred)\b",
    re.IGNORECASE,
)
_ERROR_RESULT = re.compile(r"^\s*(error|exception|traceback|failed|timeout)\b", re.IGNORECASE)


def salient_words(text: str) -> set[str]:
    """Numbers, capitalized words and content words (lower-cased, crude 6-char stems)."""
    out: set[str] = set()
    for w in _WORD.findall(text):
        lw = w.lower()
        if lw in _STOP:
            continue
        out.add(lw.replace(",", "") if w[0].isdigit() else lw[:6])
    return out


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    try:
        return json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(v)


def _result_error(step: Step) -> str | None:
    if step.error:
        return step.error
    r = step.result
    if isinstance(r, Mapping) and r.get("error"):
        return str(r["error"])
    if isinstance(r, str) and _ERROR_RESULT.match(r):
        return r[:200]
    return None


class TaskCompletion(Evaluator):
    """Goal reached, final answer present, no unrecovered errors, tool results used."""

    name = "TaskCompletion"
    required_inputs = frozenset()
    optional_inputs = frozenset(
        {"trace", "messages", "response", "query", "expected_output", "tool_calls"}
    )
    default_threshold = 0.7

    def __init__(self, *, threshold: float | None = None, goal_overlap: float = 0.6) -> None:
        super().__init__(threshold=threshold, goal_overlap=goal_overlap)
        self.goal_overlap = goal_overlap

    def _evaluate(
        self,
        *,
        trace: Any = None,
        messages: Any = None,
        response: Any = None,
        query: Any = None,
        expected_output: Any = None,
        tool_calls: Any = None,
        **_: Any,
    ) -> EvalResult:
        if trace is not None:
            steps = steps_from_trace(trace)
        elif messages is not None:
            steps = steps_from_messages(messages)
        else:
            steps = []
        if tool_calls:
            for tc in tool_calls:
                d = tc.model_dump() if hasattr(tc, "model_dump") else dict(tc)
                steps.append(
                    Step(
                        "tool",
                        name=d.get("name"),
                        arguments=d.get("arguments"),
                        result=d.get("result"),
                    )
                )
        if trace is None and messages is None and response is None:
            raise ValueError("TaskCompletion needs trace, messages or response")
        answer = _as_text(response) if response is not None else final_answer(steps)
        details: dict[str, Any] = {"steps": len(steps)}
        if not answer or not answer.strip():
            details["final_answer"] = False
            return EvalResult(0.0, "no final answer", details)
        details["final_answer"] = True
        checks: dict[str, float] = {}
        reasons: list[str] = []

        # goal
        a_words = salient_words(answer)
        if expected_output is not None:
            e_words = salient_words(_as_text(expected_output))
            recall = len(e_words & a_words) / len(e_words) if e_words else 1.0
            details["goal_recall"] = round(recall, 3)
            checks["goal"] = 1.0 if recall >= self.goal_overlap else recall
            if recall < self.goal_overlap:
                reasons.append(f"answer covers {recall:.0%} of the expected output")
        gave_up = bool(_GIVE_UP.search(answer))
        details["gave_up"] = gave_up
        if gave_up:
            checks["goal"] = 0.0
            reasons.append("the agent gave up")
        elif expected_output is None and query is not None:
            q_words = salient_words(_as_text(query))
            checks["goal"] = 1.0 if not q_words or q_words & a_words else 0.5
            if checks["goal"] < 1:
                reasons.append("answer shares no content words with the goal")

        # errors, with recovery by a later success of the same tool
        errors: list[dict[str, Any]] = []
        for i, st in enumerate(steps):
            err = _result_error(st)
            if err is None:
                continue
            recovered = any(
                later.kind == st.kind and later.name == st.name and _result_error(later) is None
                for later in steps[i + 1 :]
            )
            errors.append({"step": i, "name": st.name, "error": err[:200], "recovered": recovered})
        unrecovered = [e for e in errors if not e["recovered"]]
        details["errors"] = errors
        checks["errors"] = 0.0 if unrecovered else 1.0
        if unrecovered:
            reasons.append(
                f"{len(unrecovered)} unrecovered error(s), first in {unrecovered[0]['name'] or 'a step'}"
            )

        # tool results used
        tool_steps = [
            (i, st)
            for i, st in enumerate(steps)
            if st.kind == "tool" and st.result is not None and _result_error(st) is None
        ]
        if tool_steps:
            used = 0
            unused: list[str | None] = []
            for i, st in tool_steps:
                r_words = salient_words(_as_text(st.result))
                # a result counts as used when its words reach a later model output or a later
                # call's arguments (merely being in the model's input is not use)
                later_text = " ".join(
                    [answer]
                    + [later.text or "" for later in steps[i + 1 :]]
                    + [
                        _as_text(later.arguments)
                        for later in steps[i + 1 :]
                        if later.kind == "tool"
                    ]
                )
                hit = bool(r_words & salient_words(later_text)) if r_words else True
                used += hit
                if not hit:
                    unused.append(st.name)
            share = used / len(tool_steps)
            checks["tool_results_used"] = share
            details["unused_tool_results"] = unused
            if unused:
                reasons.append(f"results of {unused} never used")
        details["checks"] = checks
        value = sum(checks.values()) / len(checks) if checks else 1.0
        if "goal" in checks:  # missing the goal cannot be averaged away by clean mechanics
            value = min(value, checks["goal"])
        return EvalResult(value, "; ".join(reasons) or "task completed", details)


EVALUATORS = [TaskCompletion]
