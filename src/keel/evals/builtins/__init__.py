"""Built-in evaluators, one module per family, registered through the same hook as plugins.

Each module lists its evaluator classes in ``EVALUATORS`` (or, failing that, every public
:class:`~keel.evals.base.Evaluator` subclass it defines is taken). :func:`register_evaluators`
imports the modules of this package and hands each class to ``register``; a module that fails
to import (a missing optional dependency) is skipped with a warning, so one family cannot take
the others down.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from collections.abc import Callable
from typing import Any

from keel.evals.base import Evaluator

log = logging.getLogger(__name__)

# module name -> import error of a built-in family that could not load (last registration)
LOAD_ERRORS: dict[str, str] = {}


def _module_evaluators(mod: Any) -> list[type[Evaluator]]:
    listed = getattr(mod, "EVALUATORS", None)
    if listed is not None:
        return list(listed)
    return [
        obj
        for name, obj in vars(mod).items()
        if inspect.isclass(obj)
        and issubclass(obj, Evaluator)
        and obj.__module__ == mod.__name__
        and not name.startswith("_")
        and not inspect.isabstract(obj)
        and obj.name != Evaluator.name
    ]


def register_evaluators(register: Callable[..., Any]) -> None:
    """The built-ins' registration hook (same signature as a plugin's)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # an optional dependency missing must not hide other families
            log.warning("built-in evaluators in %s not loaded: %s", info.name, e)
            LOAD_ERRORS[info.name] = f"{type(e).__name__}: {e}"
            continue
        for cls in _module_evaluators(mod):
            register(cls)
