"""Keel: LLMOps reliability — traces, prompts, datasets, evaluators, gateway and gated releases.

This module is the public SDK facade. It stays light: importing ``keel`` pulls in neither a web
framework nor a database driver. Tracing and prompt helpers load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "init": ("keel.sdk.tracing", "init"),
    "shutdown": ("keel.sdk.tracing", "shutdown"),
    "flush": ("keel.sdk.tracing", "flush"),
    "trace": ("keel.sdk.tracing", "trace"),
    "span": ("keel.sdk.tracing", "span"),
    "instrument": ("keel.sdk.integrations", "instrument"),
    "get_prompt": ("keel.sdk.prompts", "get_prompt"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
