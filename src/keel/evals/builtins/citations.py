"""CitationAccuracy: citations such as ``[1]`` or ``[doc-id]`` point at context documents that
support the sentence carrying them.

Numeric markers are 1-based positions in ``context`` (``[1]`` is the first document) unless a
document has that id; other markers must equal a document id. A sentence's citation is
*supported* when the cited document contains the sentence's numbers and at least
``min_overlap`` of its content words (lexical check, default), or - with
``support="groundedness"`` - when the registered Groundedness evaluator passes the sentence
against that document. Value = supported citations / all citations; with no citation at all the
value is 0 (``require_citations=False`` makes it 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from keel.evals.base import EvalResult, Evaluator

_CITE = re.compile(r"\[(\s*[\w.:#/-]+(?:\s*[,;]\s*[\w.:#/-]+)*\s*)\]")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+|\d+(?:[.,]\d+)*%?")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
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
        "was",
        "were",
        "be",
        "been",
        "with",
        "by",
        "from",
        "at",
        "as",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "not",
        "no",
        "than",
        "then",
        "also",
        "has",
        "have",
        "had",
        "will",
        "would",
        "can",
        "could",
        "may",
        "might",
        "shall",
        "should",
        "do",
        "does",
        "did",
        "but",
        "if",
        "so",
        "such",
        "into",
        "over",
        "per",
        "each",
        "about",
        "their",
        "there",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "our",
        "you",
        "your",
    ]
)


def read_documents(context: Any) -> list[tuple[str | None, str]]:
    """``(id, text)`` pairs from a string, a list of strings, Documents or dicts."""
    if context is None:
        return []
    if isinstance(context, str):
        return [(None, context)]
    if isinstance(context, Mapping):
        context = [context]
    docs: list[tuple[str | None, str]] = []
    for d in context:
        if isinstance(d, str):
            docs.append((None, d))
        elif hasattr(d, "content"):
            docs.append((getattr(d, "id", None), str(d.content)))
        elif isinstance(d, Mapping):
            text = d.get("content") or d.get("text") or d.get("page_content") or ""
            did = d.get("id") or d.get("doc_id") or (d.get("metadata") or {}).get("id")
            docs.append((str(did) if did is not None else None, str(text)))
        else:
            docs.append((None, str(d)))
    return docs


def _stem(w: str) -> str:
    w = w.lower()
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def lexical_support(
    sentence: str, doc: str, *, min_overlap: float = 0.6
) -> tuple[bool, float, list[str]]:
    """Does ``doc`` support ``sentence``? (numbers all present, enough content words present)."""
    doc_nums = {n.replace(",", "") for n in _NUM.findall(doc)}
    missing_nums = [n for n in _NUM.findall(sentence) if n.replace(",", "") not in doc_nums]
    words = {
        _stem(w) for w in _WORD.findall(sentence) if w.lower() not in _STOP and not w[0].isdigit()
    }
    doc_words = {_stem(w) for w in _WORD.findall(doc)}
    overlap = len(words & doc_words) / len(words) if words else 1.0
    return (not missing_nums and overlap >= min_overlap), overlap, missing_nums


def split_sentences(text: str) -> list[str]:
    """Sentences of a response (citation markers stay attached to their sentence)."""
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


class CitationAccuracy(Evaluator):
    """Share of citations that point at an existing context document that supports the sentence."""

    name = "CitationAccuracy"
    required_inputs = frozenset({"response", "context"})
    default_threshold = 0.8

    def __init__(
        self,
        *,
        threshold: float | None = None,
        min_overlap: float = 0.6,
        require_citations: bool = True,
        support: str = "lexical",
    ) -> None:
        if support not in ("lexical", "groundedness"):
            raise ValueError("support must be 'lexical' or 'groundedness'")
        super().__init__(
            threshold=threshold,
            min_overlap=min_overlap,
            require_citations=require_citations,
            support=support,
        )
        self.min_overlap = min_overlap
        self.require_citations = require_citations
        self.support = support
        self._grounded: Any = None

    def _supported(self, sentence: str, doc: str) -> tuple[bool, float, list[str]]:
        if self.support == "groundedness":
            if self._grounded is None:
                from keel.evals.registry import get_evaluator

                self._grounded = get_evaluator("Groundedness")()
            s = self._grounded.evaluate(response=sentence, context=[doc])
            if s.error:
                raise RuntimeError(s.error)
            return bool(s.passed), float(s.value or 0.0), []
        return lexical_support(sentence, doc, min_overlap=self.min_overlap)

    def _evaluate(self, *, response: Any, context: Any, **_: Any) -> EvalResult:
        docs = read_documents(context)
        ids = {d_id: i for i, (d_id, _) in enumerate(docs) if d_id is not None}
        results: list[dict[str, Any]] = []
        uncited = 0
        for sent in split_sentences(str(response)):
            markers = [
                m.strip() for g in _CITE.findall(sent) for m in re.split(r"[,;]", g) if m.strip()
            ]
            claim = _CITE.sub("", sent).strip()
            if not markers:
                if len(_WORD.findall(claim)) >= 4:
                    uncited += 1
                continue
            for mk in markers:
                idx = ids.get(mk)
                if idx is None and mk.isdigit() and 1 <= int(mk) <= len(docs):
                    idx = int(mk) - 1
                if idx is None:
                    results.append(
                        {
                            "citation": mk,
                            "sentence": claim[:200],
                            "valid": False,
                            "supported": False,
                        }
                    )
                    continue
                ok, overlap, missing = self._supported(claim, docs[idx][1])
                results.append(
                    {
                        "citation": mk,
                        "sentence": claim[:200],
                        "valid": True,
                        "supported": ok,
                        "overlap": round(overlap, 3),
                        "missing_numbers": missing,
                    }
                )
        details: dict[str, Any] = {"citations": results, "uncited_sentences": uncited}
        if not results:
            return EvalResult(0.0 if self.require_citations else 1.0, "no citations found", details)
        good = sum(r["supported"] for r in results)
        invalid = [r["citation"] for r in results if not r["valid"]]
        unsupported = [r["citation"] for r in results if r["valid"] and not r["supported"]]
        parts = []
        if invalid:
            parts.append(f"citations {invalid} point at no document")
        if unsupported:
            parts.append(f"citations {unsupported} do not support their sentence")
        reason = "; ".join(parts) or f"all {len(results)} citations supported"
        return EvalResult(good / len(results), reason, details)


EVALUATORS = [CitationAccuracy]
