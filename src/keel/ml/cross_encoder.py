"""A small cross-encoder that judges whether two questions ask the same thing, offline.

A bi-encoder (``keel.ml.embeddings``) embeds each text alone, so "How do I learn Java?" and
"How do I learn Python?" land close together. A cross-encoder reads both texts at once
(``[CLS] a [SEP] b [SEP]``) and can see the one word that differs. Keel's semantic cache runs it
only on the one to three nearest cached prompts, so its cost is paid per lookup, not per entry.

The model is the first three layers of all-MiniLM-L6-v2 (Apache-2.0) with a binary head,
fine-tuned on the tuning half of Quora question pairs (``tools/train_pair_verifier.py``,
written to ``build/pair-verifier-int8.onnx``). It is opt-in and not shipped: on the held-out
QQP half it gave no gain over the logistic verifier at a 1 % false-hit target (0.88 % / 13.4 %
recall vs 0.93 % / 16.0 %) for 3-15 CPU-ms more per lookup, and QQP comes under Quora's own
terms. Point ``KEEL_CACHE_PAIR_MODEL`` at a model to use it. It runs with onnxruntime +
tokenizers (the ``local`` extra); torch is never needed::

    from keel.ml.cross_encoder import load_cross_encoder
    ce = load_cross_encoder()          # None when none is configured or it cannot load
    if ce is not None:
        ce.score([("How do I learn Java?", "How can I learn Java?")])   # array([0.9...])

Nothing is loaded at import time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keel.errors import UnavailableError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("keel.ml")

MODEL_FILE = "pair-verifier-int8.onnx"
MAX_TOKENS = 64  # the training length: [CLS] a [SEP] b [SEP], longest text truncated first


ENV_VAR = "KEEL_CACHE_PAIR_MODEL"


def default_model_path() -> Path | None:
    """The model named by ``KEEL_CACHE_PAIR_MODEL``, or None (no model is shipped)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else None


class CrossEncoder:
    """An ONNX pair classifier: :meth:`score` gives P(same question) per ``(a, b)`` pair.

    ``symmetric=True`` scores both orders and averages the logits (twice the cost; the model
    was trained with random order, so the gain is small). Thread-safe.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_tokens: int = MAX_TOKENS,
        threads: int = 1,
        symmetric: bool = False,
    ) -> None:
        try:
            import numpy
            import onnxruntime  # noqa: F401  (availability check: the local extra)
            import tokenizers  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise UnavailableError(f"the cross-encoder needs the 'local' extra: {e}")
        chosen = Path(path) if path is not None else default_model_path()
        if chosen is None:
            raise UnavailableError(f"no cross-encoder model configured (set {ENV_VAR})")
        self.path = chosen
        if not self.path.is_file():
            raise UnavailableError(f"cross-encoder model not found: {self.path}")
        self._np = numpy
        from keel.ml.embeddings import minilm_tokenizer, onnx_session

        self._tok = minilm_tokenizer(max_tokens, pad=False)
        try:
            self._session = onnx_session(str(self.path), threads)
        except Exception as e:  # a truncated or foreign file
            raise UnavailableError(f"cross-encoder model unreadable: {self.path}: {e}")
        self.symmetric = symmetric

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Raw logits, one per pair, in one batched run."""
        np = self._np
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if len(pairs) == 1:  # the common case: no padding
            e = self._tok.encode(pairs[0][0], pairs[0][1])
            ids = np.array([e.ids], dtype=np.int64)
            typ = np.array([e.type_ids], dtype=np.int64)
            mask = np.ones_like(ids)
        else:
            enc = self._tok.encode_batch([(a, b) for a, b in pairs])
            n = max(len(e.ids) for e in enc)
            ids = np.zeros((len(enc), n), dtype=np.int64)
            typ = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for i, e in enumerate(enc):
                k = len(e.ids)
                ids[i, :k] = e.ids
                typ[i, :k] = e.type_ids
                mask[i, :k] = 1
        out = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": typ}
        )[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """P(same question) per pair, in [0, 1]."""
        np = self._np
        z = self.logits(pairs)
        if self.symmetric and len(z):
            z = (z + self.logits([(b, a) for a, b in pairs])) / 2
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))  # type: ignore[no-any-return]


_instance: CrossEncoder | None = None
_failed = False
_lock = threading.Lock()


def load_cross_encoder() -> CrossEncoder | None:
    """The process-wide bundled :class:`CrossEncoder`, or None with one logged warning.

    None when the model file is missing (a slim build) or onnxruntime/tokenizers are not
    installed; callers then fall back to a cheaper verifier.
    """
    global _instance, _failed
    if _instance is not None or _failed:
        return _instance
    if default_model_path() is None:
        return None  # none configured: callers use their cheaper verifier, silently
    with _lock:
        if _instance is None and not _failed:
            try:
                _instance = CrossEncoder()
            except UnavailableError as e:
                _failed = True
                log.warning("cross-encoder verifier unavailable (%s); using the fallback", e)
    return _instance
