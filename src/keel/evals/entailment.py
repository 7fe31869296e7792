"""A small learned "is this claim supported by this evidence?" model for the grounding engine.

The lexical checks in :mod:`keel.evals.grounding` see words, numbers, names and cues; they
cannot tell a paraphrase from an unsupported claim that reuses the context's vocabulary. This
module adds a cross-encoder: a 2-layer MiniLM (truncated from all-MiniLM-L6-v2, Apache-2.0)
fine-tuned by ``tools/train_grounding_nli.py`` on HaluEval development rows and on
programmatically perturbed hard cases, exported to int8 ONNX. It runs with ``onnxruntime`` and
``tokenizers`` only (no torch), deterministically, one pair per answer claim:

- the claim (an answer sentence or clause; short claims are prefixed with the end of the
  query, so "Paris" becomes "... which city? Paris"), against
- its evidence: the ``EVIDENCE_K`` context sentences sharing the most (rare) words with it, in
  document order. Long documents stay cheap: only retrieved sentences reach the model.

:func:`claim_pairs` builds these pairs; training uses the same function, so the model sees at
run time exactly what it saw in training. The model ships as a 3.3 MB weights file
(``keel/assets/grounding-ce.npz``: two layers and a head; the embeddings come from the
packaged MiniLM) from which :mod:`keel.ml.grounding_model` builds an int8 ONNX graph at install
or on first use. ``KEEL_GROUNDING_MODEL`` (or ``Groundedness(model_path=...)``) points at
another ONNX pair classifier with the same inputs; ``KEEL_GROUNDING_MODEL=off`` switches it off.
Without a model (switched off, the ``local`` extra missing, a file missing: the last two with a
warning logged once) the grounding engine is the lexical scorer. How the model's support
combines with the lexical checks, and what it costs, is in docs/evaluators-grounding.md.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.ml import text as T

if TYPE_CHECKING:
    import numpy as np

    from keel.evals.grounding import ContextIndex

__all__ = [
    "DEFAULT_MODEL",
    "EVIDENCE_K",
    "MAX_TOKENS",
    "EntailmentModel",
    "claim_pairs",
    "get_entailment_model",
    "pairs_for_claims",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "grounding-nli-minilm-l2-int8.onnx"
MAX_TOKENS = 96  # claim + evidence word pieces, as in training
EVIDENCE_K = 2
SHORT_CLAIM_WORDS = 8  # claims shorter than this are read together with the query's end
QUERY_TAIL_WORDS = 24
ENV_VAR = "KEEL_GROUNDING_MODEL"


def _query_tail(query: str) -> str:
    """The end of the query: the last turn of a dialogue history, at most QUERY_TAIL_WORDS."""
    q = query.strip()
    for marker in ("[Human]:", "[User]:", "User:", "Human:"):
        at = q.rfind(marker)
        if at >= 0:
            q = q[at + len(marker) :].strip()
            break
    words = q.split()
    return " ".join(words[-QUERY_TAIL_WORDS:])


def _evidence(idx: ContextIndex, stems: list[str], k: int) -> str:
    """The ``k`` context sentences sharing the most rare stems with ``stems``, in order."""
    if not idx.sentences:
        return ""
    scores: dict[int, float] = {}
    for st in set(stems):
        post = idx.postings.get(st)
        if not post:
            continue
        w = 1.0 + math.log(len(idx.sentences) / len(post))
        for i in post:
            scores[i] = scores.get(i, 0.0) + w
    if not scores:
        return idx.sentences[0].text
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    return " ".join(idx.sentences[i].text for i in sorted(best))


def claim_pairs(
    response: str,
    context: str | ContextIndex,
    query: str | None = None,
    *,
    k: int = EVIDENCE_K,
) -> list[tuple[str, str]]:
    """(claim, evidence) pairs of ``response``: one per factual claim (the whole response when
    no claim states a fact), evidence retrieved from ``context`` as described above."""
    from keel.evals.grounding import index_context

    idx = index_context(context) if isinstance(context, str) else context
    claims = [c for c in T.extract_claims(response) if T.is_factual(c)]
    if not claims and response.strip():
        claims = [response.strip()]
    return pairs_for_claims(claims, idx, query, k=k)


def pairs_for_claims(
    claims: list[str], idx: ContextIndex, query: str | None = None, *, k: int = EVIDENCE_K
) -> list[tuple[str, str]]:
    """:func:`claim_pairs` for claims already extracted (the grounding engine's factual ones)."""
    tail = _query_tail(query) if query else ""
    tail_stems = T.content_tokens(tail) if tail else []
    out: list[tuple[str, str]] = []
    for c in claims:
        stems = T.content_tokens(c)
        short = tail and len(c.split()) < SHORT_CLAIM_WORDS
        a = f"{tail} {c}" if short else c
        out.append((a, _evidence(idx, stems + tail_stems if short else stems, k)))
    return out


class EntailmentModel:
    """A loaded cross-encoder: ``support(pairs)`` gives P(claim supported by evidence) per pair.

    Thread-safe (ONNX Runtime sessions may be run concurrently). One intra-op thread and no
    spin-waiting, as for the embedder: the work per call is small and the box is shared.
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        import numpy

        self._np = numpy
        self.path = Path(path)
        from keel.ml.embeddings import minilm_tokenizer, onnx_session

        self._tok = minilm_tokenizer(MAX_TOKENS, pad=True)
        self._toks = {MAX_TOKENS: self._tok}
        self._session = onnx_session(str(self.path), threads)
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _tokenizer(self, max_tokens: int) -> Any:
        tok = self._toks.get(max_tokens)
        if tok is None:
            from keel.ml.embeddings import minilm_tokenizer

            tok = self._toks[max_tokens] = minilm_tokenizer(max_tokens, pad=True)
        return tok

    def logits(self, pairs: list[tuple[str, str]], *, max_tokens: int = MAX_TOKENS) -> np.ndarray:
        """Support logits (log-odds that the claim is supported), one per pair; each pair is cut
        to ``max_tokens`` word pieces (the evidence first), and the cost is linear in them."""
        np = self._np
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        enc = self._tokenizer(max_tokens).encode_batch(pairs)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        feeds: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        out = self._session.run(None, feeds)[0]
        return np.asarray(out, dtype=np.float32).reshape(len(pairs))

    def support(self, pairs: list[tuple[str, str]], *, max_tokens: int = MAX_TOKENS) -> list[float]:
        """P(supported) per pair."""
        return [
            1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, float(z)))))
            for z in self.logits(pairs, max_tokens=max_tokens)
        ]


OFF = ("", "0", "off", "none", "false", "lexical")


def default_model_path() -> Path | None:
    """``KEEL_GROUNDING_MODEL`` if set (``off`` / ``none`` / empty: no model, the lexical
    scorer), else the shipped model, built from its committed weights on first use if
    ``make install`` has not built it (:mod:`keel.ml.grounding_model`)."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env)
    from keel.ml.grounding_model import BUILT_PATH

    return BUILT_PATH


_models: dict[str, EntailmentModel | None] = {}
_lock = threading.Lock()


def get_entailment_model(path: str | Path | None = None) -> EntailmentModel | None:
    """The process-wide model for ``path`` (default: :func:`default_model_path`), or None with a
    one-time warning when the file or the ``local`` extra is missing."""
    p = Path(path) if path is not None else default_model_path()
    key = str(p)
    with _lock:
        if key in _models:
            return _models[key]
        model: EntailmentModel | None = None
        if p is not None and path is None and ENV_VAR not in os.environ:
            _build_shipped(p)  # missing, or built from older weights (a pull without install)
        if p is None:
            pass  # switched off: the lexical scorer, silently
        elif not p.is_file():
            log.warning(
                "grounding model %s not found: Groundedness falls back to the lexical scorer", p
            )
        else:
            try:
                model = EntailmentModel(p)
            except ImportError as e:
                log.warning(
                    "grounding model needs the 'local' extra (%s): using the lexical scorer", e
                )
        _models[key] = model
        return model


def _build_shipped(path: Path) -> None:
    """Build the shipped model if it is missing or stale (``make install`` normally has built
    it); a failure is logged, and the caller then uses the file as it is or, without one, the
    lexical scorer."""
    try:
        from keel.ml.grounding_model import BUILT_PATH, build_model, is_current

        if path == BUILT_PATH and not is_current(path):
            build_model(path)
            log.info("built the grounding model %s", path)
    except ImportError as e:
        log.warning("grounding model needs the 'local' extra (%s): using the lexical scorer", e)
    except Exception as e:  # a broken build must not break evaluation
        log.warning("could not build the grounding model (%s): using the lexical scorer", e)
