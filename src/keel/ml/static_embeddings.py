"""Static sentence embeddings distilled from all-MiniLM-L6-v2: a table look-up, ~0.1 ms a text.

Each WordPiece token has one fixed 256-d vector (``keel/assets/minilm-static-256.npz``, made by
``tools/distill_static_embeddings.py`` from the MiniLM weights: every token embedded alone,
PCA, rarer tokens weighted up, int8). A text's vector is the normalised mean of its tokens'
vectors. It is much weaker than MiniLM at ranking, but strong enough to *retrieve* candidates
for a verifier that reads both texts (the semantic cache's cross-encoder), at a hundredth of
the cost::

    from keel.ml.static_embeddings import StaticEmbedder
    emb = StaticEmbedder()
    emb.embed(["How do I reset my password?"]).shape    # (1, 256), unit norm

Needs ``numpy`` and ``tokenizers`` (the ``local`` extra). Nothing is loaded at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from keel.errors import UnavailableError

if TYPE_CHECKING:
    import numpy as np

TABLE_FILE = "minilm-static-256.npz"
MODEL_NAME = "minilm-static-256"
MAX_TOKENS = 512


class StaticEmbedder:
    """Token-table sentence embeddings (thread-safe: it holds no mutable state)."""

    def __init__(self, *, max_tokens: int = MAX_TOKENS) -> None:
        try:
            import numpy
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise UnavailableError(f"static embeddings need numpy and tokenizers: {e}")
        self._np = numpy
        assets = resources.files("keel.assets")
        tok = Tokenizer.from_str(
            assets.joinpath("minilm-tokenizer.json").read_text(encoding="utf-8")
        )
        tok.no_padding()
        tok.enable_truncation(max_length=max_tokens)
        self._tok = tok
        try:
            with assets.joinpath(TABLE_FILE).open("rb") as f, numpy.load(f) as z:
                table = z["table"].astype(numpy.float32) * z["scale"][:, None]
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UnavailableError(f"static embedding table unavailable: {e}")
        self._table = table
        self.dimensions = int(table.shape[1])
        self.model = MODEL_NAME

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An ``(n, 256)`` float32 array of unit vectors."""
        np = self._np
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        encs = (
            [self._tok.encode(texts[0], add_special_tokens=False)]
            if len(texts) == 1
            else self._tok.encode_batch(list(texts), add_special_tokens=False)
        )
        for i, e in enumerate(encs):
            if e.ids:
                v = self._table[e.ids].sum(0)
                n = float(np.linalg.norm(v))
                if n > 0:
                    out[i] = v / n
        return out
