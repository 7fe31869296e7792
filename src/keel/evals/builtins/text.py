"""String evaluators: ExactMatch, Contains, Regex, Levenshtein.

All compare the ``response`` with an expected string (``expected_output`` or a configured
value) after optional normalization (Unicode NFKC, case folding, whitespace collapsed).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, ClassVar

from keel.errors import InvalidInputError
from keel.evals.base import EvalResult, Evaluator


def as_text(value: Any) -> str:
    """A response or expected value as text (dicts and lists as compact JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "content") and isinstance(value.content, str):
        return str(value.content)
    import json

    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


_WS = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n\r.!?,;:\"'`“”‘’"


def normalize_text(
    text: str, *, case_sensitive: bool = False, strip_punctuation: bool = True
) -> str:
    """NFKC, whitespace collapsed, optionally case-folded and stripped of edge punctuation."""
    t = unicodedata.normalize("NFKC", text)
    t = _WS.sub(" ", t).strip()
    if strip_punctuation:
        t = t.strip(_EDGE_PUNCT)
    return t if case_sensitive else t.casefold()


def _candidates(expected: Any) -> list[str]:
    if isinstance(expected, list | tuple | set | frozenset):
        return [as_text(e) for e in expected]
    return [as_text(expected)]


class ExactMatch(Evaluator):
    """1.0 when the response equals the expected output (any of them, if a list), else 0.0."""

    name = "ExactMatch"
    required_inputs = frozenset({"response", "expected_output"})
    default_threshold = 1.0

    def __init__(
        self,
        *,
        threshold: float | None = None,
        case_sensitive: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__(threshold=threshold, case_sensitive=case_sensitive, normalize=normalize)
        self.case_sensitive = case_sensitive
        self.normalize = normalize

    def _norm(self, s: str) -> str:
        if not self.normalize:
            return s if self.case_sensitive else s.casefold()
        return normalize_text(s, case_sensitive=self.case_sensitive)

    def _evaluate(self, *, response: Any, expected_output: Any, **_: Any) -> EvalResult:
        got = self._norm(as_text(response))
        for cand in _candidates(expected_output):
            if got == self._norm(cand):
                return EvalResult(1.0, "response matches the expected output")
        return EvalResult(0.0, "response differs from the expected output", {"response": got[:200]})


class Contains(Evaluator):
    """Share of the configured substrings found in the response.

    ``value`` (a string or a list; defaults to ``expected_output``), ``mode`` ``all`` (every
    value must appear; score = share found) or ``any``; ``negate=True`` inverts (pass when none
    appears); ``whole_word=True`` matches on word boundaries.
    """

    name = "Contains"
    required_inputs = frozenset({"response"})
    optional_inputs = frozenset({"expected_output"})
    default_threshold = 1.0
    short_arg: ClassVar[str] = "value"

    def __init__(
        self,
        value: str | list[str] | None = None,
        *,
        threshold: float | None = None,
        mode: str = "all",
        case_sensitive: bool = False,
        whole_word: bool = False,
        negate: bool = False,
    ) -> None:
        if mode not in ("all", "any"):
            raise InvalidInputError("Contains mode must be 'all' or 'any'")
        super().__init__(
            threshold=threshold,
            value=value,
            mode=mode,
            case_sensitive=case_sensitive,
            whole_word=whole_word,
            negate=negate,
        )
        self.value = value
        self.mode = mode
        self.case_sensitive = case_sensitive
        self.whole_word = whole_word
        self.negate = negate

    def _found(self, needle: str, hay: str) -> bool:
        n = normalize_text(needle, case_sensitive=self.case_sensitive, strip_punctuation=False)
        if not n:
            return True
        if self.whole_word:
            flags = 0 if self.case_sensitive else re.IGNORECASE
            return re.search(rf"(?<!\w){re.escape(n)}(?!\w)", hay, flags) is not None
        return n in hay

    def _evaluate(self, *, response: Any, expected_output: Any = None, **_: Any) -> EvalResult:
        values = self.value if self.value is not None else expected_output
        if values is None:
            raise InvalidInputError("Contains needs value=... or an expected_output")
        needles = _candidates(values)
        hay = normalize_text(
            as_text(response), case_sensitive=self.case_sensitive, strip_punctuation=False
        )
        found = [n for n in needles if self._found(n, hay)]
        missing = [n for n in needles if n not in found]
        if self.negate:
            value = 0.0 if found else 1.0
            reason = (
                f"forbidden text found: {found}" if found else "none of the forbidden texts found"
            )
        elif self.mode == "any":
            value = 1.0 if found else 0.0
            reason = f"found {found[0]!r}" if found else f"none of {needles} found"
        else:
            value = len(found) / len(needles)
            reason = "all found" if not missing else f"missing {missing}"
        return EvalResult(value, reason, {"found": found, "missing": missing})


class Regex(Evaluator):
    """1.0 when ``pattern`` matches the response (``fullmatch=True``: the whole response)."""

    name = "Regex"
    required_inputs = frozenset({"response"})
    default_threshold = 1.0
    short_arg: ClassVar[str] = "pattern"

    def __init__(
        self,
        pattern: str,
        *,
        threshold: float | None = None,
        ignore_case: bool = False,
        fullmatch: bool = False,
        negate: bool = False,
    ) -> None:
        super().__init__(
            threshold=threshold,
            pattern=pattern,
            ignore_case=ignore_case,
            fullmatch=fullmatch,
            negate=negate,
        )
        try:
            self._re = re.compile(pattern, (re.IGNORECASE if ignore_case else 0) | re.DOTALL)
        except re.error as e:
            raise InvalidInputError(f"bad regex {pattern!r}: {e}") from e
        self.fullmatch = fullmatch
        self.negate = negate

    def _evaluate(self, *, response: Any, **_: Any) -> EvalResult:
        text = as_text(response)
        m = self._re.fullmatch(text.strip()) if self.fullmatch else self._re.search(text)
        hit = m is not None
        ok = hit != self.negate
        details = {"match": m.group(0)[:200]} if m else {}
        reason = ("matched" if hit else "no match") + (" (negated)" if self.negate else "")
        return EvalResult(1.0 if ok else 0.0, reason, details)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), O(len(a)·len(b)) time, O(min) memory."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


class Levenshtein(Evaluator):
    """Normalized edit similarity ``1 - distance / max(len)`` to the closest expected output."""

    name = "Levenshtein"
    required_inputs = frozenset({"response", "expected_output"})
    default_threshold = 0.8
    max_chars: ClassVar[int] = 5000

    def __init__(
        self,
        *,
        threshold: float | None = None,
        case_sensitive: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__(threshold=threshold, case_sensitive=case_sensitive, normalize=normalize)
        self.case_sensitive = case_sensitive
        self.normalize = normalize

    def _norm(self, s: str) -> str:
        if self.normalize:
            return normalize_text(s, case_sensitive=self.case_sensitive)
        return s if self.case_sensitive else s.casefold()

    def _evaluate(self, *, response: Any, expected_output: Any, **_: Any) -> EvalResult:
        got = self._norm(as_text(response))[: self.max_chars]
        best, best_d = 0.0, 0
        for cand in _candidates(expected_output):
            exp = self._norm(cand)[: self.max_chars]
            longest = max(len(got), len(exp))
            d = levenshtein(got, exp)
            sim = 1.0 if longest == 0 else 1 - d / longest
            if sim >= best:
                best, best_d = sim, d
        return EvalResult(
            best, f"edit similarity {best:.3f} (distance {best_d})", {"distance": best_d}
        )


EVALUATORS = [ExactMatch, Contains, Regex, Levenshtein]
