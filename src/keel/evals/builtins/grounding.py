"""The grounding family: Groundedness, HallucinationScore, ContextRelevance, AnswerRelevance,
SemanticSimilarity.

All run locally and deterministically. Groundedness and HallucinationScore use the claim-level
engine in :mod:`keel.evals.grounding` (words, numbers, names, relations, negation, scope,
combined by a logistic model fitted on HaluEval development rows); the relevance and similarity
evaluators use MiniLM sentence embeddings (:mod:`keel.ml.embeddings`, the ``local`` extra).

>>> ctx = "Refunds are available within 30 days of purchase, unless the item was on clearance."
>>> Groundedness().evaluate(response="You can get a refund within 30 days.", context=ctx).passed
False
>>> Groundedness().evaluate(
...     response="Unless it was a clearance item, you get your money back within 30 days.", context=ctx
... ).passed
True

Score semantics (``higher_is_better`` is explicit on each class):

- ``Groundedness``: probability that every claim of the response is supported by the context;
  higher is better, passes at ``>= threshold``.
- ``HallucinationScore``: probability that the response contains at least one unsupported
  claim, i.e. exactly ``1 - Groundedness``; **lower is better**, passes at ``<= threshold``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from keel.evals import grounding as G
from keel.evals.base import EvalResult, Evaluator

__all__ = [
    "AnswerRelevance",
    "ContextRelevance",
    "Groundedness",
    "HallucinationScore",
    "SemanticSimilarity",
    "context_text",
]


def context_text(context: Any) -> str:
    """One text from a context given as a string, a list of strings, Documents or dicts."""
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    if isinstance(context, Mapping):
        context = [context]
    parts: list[str] = []
    for d in context:
        if isinstance(d, str):
            parts.append(d)
        elif hasattr(d, "content"):
            parts.append(str(d.content))
        elif isinstance(d, Mapping):
            parts.append(str(d.get("content") or d.get("text") or d.get("page_content") or ""))
        else:
            parts.append(str(d))
    return "\n".join(p for p in parts if p)


def _reason(report: G.GroundingReport, grounded: bool) -> str:
    bad = report.unsupported
    if not report.claims:
        return "empty response: nothing to ground"
    if not bad:
        head = (
            "all claims supported by the context"
            if grounded
            else "claims look supported, but the answer as a whole scores low"
        )
        return f"{head} ({len(report.claims)} claim(s), p_grounded={report.score:.2f})"
    first = bad[0]
    return (
        f"{len(bad)} of {len(report.claims)} claim(s) not supported; e.g. "
        f"{first.claim[:120]!r}: {'; '.join(first.problems[:2])}"
    )


class Groundedness(Evaluator):
    """Is every claim of ``response`` supported by ``context``? (local, deterministic)

    Value: calibrated probability that the response is grounded (higher is better).
    Details: ``unsupported_claims`` (texts), per-claim evidence and problems, the model's
    features and regime. Options: ``model`` / ``model_path`` (the claim/evidence cross-encoder
    of :mod:`keel.evals.entailment`: by default the shipped one, built at install from
    ``keel/assets/grounding-ce.npz``; ``model_path`` or ``KEEL_GROUNDING_MODEL`` picks another,
    ``KEEL_GROUNDING_MODEL=off`` or ``model=False`` gives the lexical scorer, as does a missing
    file or ``local`` extra, with a warning);
    ``semantic`` (default: on when the ``local`` extra is
    installed; ``False`` for a purely lexical, model-free check) lets a MiniLM similarity of at
    least ``paraphrase_similarity`` rescue a weak claim whose words are mostly not in the context
    (only claims with no number/name/negation/scope problem are candidates).
    The default threshold was chosen on HaluEval development rows (see
    ``keel.evals.grounding.DEFAULT_THRESHOLD`` and docs/evaluators-grounding.md).
    """

    name = "Groundedness"
    # 3: short answers, statements in questions, summary regime; 4: the shipped cross-encoder
    version = "4"
    aliases: ClassVar[tuple[str, ...]] = ("faithfulness",)
    required_inputs = frozenset({"response", "context"})
    optional_inputs = frozenset({"query"})
    default_threshold = G.DEFAULT_THRESHOLD
    higher_is_better = True

    def __init__(
        self,
        *,
        threshold: float | None = None,
        semantic: bool | None = None,
        paraphrase_similarity: float = G.PARAPHRASE_SIMILARITY,
        model: bool | None = None,
        model_path: str | None = None,
        **config: Any,
    ) -> None:
        super().__init__(
            threshold=threshold,
            semantic=semantic,
            paraphrase_similarity=paraphrase_similarity,
            model=model,
            model_path=model_path,
            **config,
        )
        self.semantic = semantic
        self.paraphrase_similarity = paraphrase_similarity
        self.model = model
        self.model_path = model_path

    def report(self, response: str, context: Any, query: str | None = None) -> G.GroundingReport:
        """The full :class:`~keel.evals.grounding.GroundingReport` (claims, evidence, features)."""
        return G.check_grounding(
            str(response),
            context_text(context),
            query=query,
            semantic=self.semantic,
            paraphrase_similarity=self.paraphrase_similarity,
            model=self.model,
            model_path=self.model_path,
        )

    def _evaluate(self, **inputs: Any) -> EvalResult:
        rep = self.report(inputs["response"], inputs["context"], inputs.get("query"))
        grounded = rep.score >= self.threshold
        return EvalResult(value=rep.score, reason=_reason(rep, grounded), details=rep.details())


class HallucinationScore(Groundedness):
    """Probability that ``response`` contains a claim the context does not support.

    Exactly ``1 - Groundedness`` on the same inputs; **lower is better** (``higher_is_better``
    is False): the score passes when ``value <= threshold``. The default threshold is
    ``1 - Groundedness.default_threshold``, so both evaluators agree on every example.
    """

    name = "HallucinationScore"
    # 3: short answers, statements in questions, summary regime; 4: the shipped cross-encoder
    version = "4"
    aliases: ClassVar[tuple[str, ...]] = ("hallucination",)
    default_threshold = round(1.0 - G.DEFAULT_THRESHOLD, 4)
    higher_is_better = False

    def _evaluate(self, **inputs: Any) -> EvalResult:
        rep = self.report(inputs["response"], inputs["context"], inputs.get("query"))
        value = 1.0 - rep.score
        return EvalResult(
            value=value, reason=_reason(rep, value <= self.threshold), details=rep.details()
        )


class _EmbeddingEvaluator(Evaluator):
    def _embed(self, texts: list[str]) -> Any:
        from keel.ml.embeddings import get_embedder

        return get_embedder().embed(texts)


def _chunks(context: Any) -> list[str]:
    from keel.ml.text import split_sentences

    text = context_text(context)
    sents = split_sentences(text)
    # Windows of two sentences keep short sentences in context without diluting long ones.
    if len(sents) <= 2:
        return [text] if text.strip() else []
    return [" ".join(sents[i : i + 2]) for i in range(0, len(sents) - 1)]


class ContextRelevance(_EmbeddingEvaluator):
    """Does the retrieved ``context`` address ``query``? (MiniLM, local)

    Value: the best cosine similarity between the query and a two-sentence window of the
    context, mapped from [``floor``, ``ceiling``] onto [0, 1] (defaults 0.15 / 0.65: unrelated
    text sits near 0.1, a passage that answers the question near 0.5-0.8). Details: the best
    window and the per-document similarity when a list is given.
    """

    name = "ContextRelevance"
    version = "1"
    required_inputs = frozenset({"query", "context"})
    default_threshold = 0.5
    higher_is_better = True

    def __init__(
        self,
        *,
        threshold: float | None = None,
        floor: float = 0.15,
        ceiling: float = 0.65,
        **config: Any,
    ) -> None:
        super().__init__(threshold=threshold, floor=floor, ceiling=ceiling, **config)
        self.floor = floor
        self.ceiling = ceiling

    def _evaluate(self, **inputs: Any) -> EvalResult:
        query = str(inputs["query"])
        ctx = inputs["context"]
        docs = [ctx] if isinstance(ctx, str | Mapping) else list(ctx)
        per_doc: list[float] = []
        best_text, best = "", -1.0
        for d in docs:
            chunks = _chunks(d)
            if not chunks:
                per_doc.append(0.0)
                continue
            vecs = self._embed([query, *chunks])
            sims = vecs[1:] @ vecs[0]
            i = int(sims.argmax())
            per_doc.append(float(sims[i]))
            if sims[i] > best:
                best, best_text = float(sims[i]), chunks[i]
        if not per_doc or best < -0.5:
            return EvalResult(value=0.0, reason="empty context", details={"per_document": per_doc})
        value = (best - self.floor) / (self.ceiling - self.floor)
        return EvalResult(
            value=max(0.0, min(1.0, value)),
            reason=f"best context window has cosine {best:.2f} to the query",
            details={
                "cosine": round(best, 4),
                "best_window": best_text[:300],
                "per_document": [round(x, 4) for x in per_doc],
            },
        )


class AnswerRelevance(_EmbeddingEvaluator):
    """Does ``response`` address ``query``? (MiniLM, local)

    Value: cosine similarity between query and response mapped from [``floor``, ``ceiling``]
    onto [0, 1] (defaults 0.1 / 0.6). A refusal or an off-topic answer scores low. It does not
    check correctness; pair it with Groundedness.
    """

    name = "AnswerRelevance"
    version = "1"
    required_inputs = frozenset({"query", "response"})
    default_threshold = 0.5
    higher_is_better = True

    def __init__(
        self,
        *,
        threshold: float | None = None,
        floor: float = 0.1,
        ceiling: float = 0.6,
        **config: Any,
    ) -> None:
        super().__init__(threshold=threshold, floor=floor, ceiling=ceiling, **config)
        self.floor = floor
        self.ceiling = ceiling

    def _evaluate(self, **inputs: Any) -> EvalResult:
        resp = str(inputs["response"]).strip()
        if not resp:
            return EvalResult(value=0.0, reason="empty response")
        v = self._embed([str(inputs["query"]), resp])
        cos = float(v[0] @ v[1])
        value = (cos - self.floor) / (self.ceiling - self.floor)
        return EvalResult(
            value=max(0.0, min(1.0, value)),
            reason=f"query-response cosine {cos:.2f}",
            details={"cosine": round(cos, 4)},
        )


class SemanticSimilarity(_EmbeddingEvaluator):
    """Cosine similarity of ``response`` and ``expected_output`` with MiniLM (local).

    Value: ``max(0, cosine)``. Paraphrases typically score 0.75-0.95 and unrelated text below
    0.2. Note that embeddings barely see negation or changed numbers ("costs $20" vs "costs
    $35" score about 0.9): use ExactMatch/Groundedness for facts.
    """

    name = "SemanticSimilarity"
    version = "1"
    required_inputs = frozenset({"response", "expected_output"})
    default_threshold = 0.75
    higher_is_better = True

    def _evaluate(self, **inputs: Any) -> EvalResult:
        a, b = str(inputs["response"]), str(inputs["expected_output"])
        if not a.strip() or not b.strip():
            return EvalResult(value=float(a.strip() == b.strip()), reason="empty text")
        v = self._embed([a, b])
        cos = float(v[0] @ v[1])
        return EvalResult(
            value=max(0.0, cos), reason=f"cosine {cos:.2f}", details={"cosine": round(cos, 4)}
        )


EVALUATORS: list[type[Evaluator]] = [
    Groundedness,
    HallucinationScore,
    ContextRelevance,
    AnswerRelevance,
    SemanticSimilarity,
]
