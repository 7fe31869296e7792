"""pytest plugin for Keel evals (registered through the ``pytest11`` entry point).

Kept import-light: it only registers the ``keel_eval`` marker until eval cases are used.
"""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    """Register the marker."""
    config.addinivalue_line("markers", "keel_eval: an evaluation case run through Keel evaluators")
