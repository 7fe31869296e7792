"""The evaluator registry: look evaluators up by name, build them from YAML short forms.

Built-ins and third-party evaluators are registered the same way. A class decorated with
:func:`register` is added to the default registry; a third-party package exposes its
evaluators through the ``keel.evaluators`` entry-point group, each entry point naming either an
:class:`~keel.evals.base.Evaluator` subclass or a hook ``def register_evaluators(register)``
that calls ``register(cls)`` for each class. Built-ins are loaded by the same hook
(:func:`keel.evals.builtins.register_evaluators`). Loading happens on first lookup, never at
import time.

Names are matched loosely: ``ExactMatch``, ``exact_match`` and ``exact-match`` are one name.
Specs accepted by :meth:`EvaluatorRegistry.create` (the forms a suite file uses)::

    "ExactMatch"                                   # a name
    {"name": "Contains", "value": "refund"}        # name + options
    {"Contains": {"value": "refund"}}              # one key: name -> options
    {"Contains": "refund"}                         # one key: name -> the evaluator's short argument
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any, TypeVar, overload

from keel.errors import ConflictError, InvalidInputError, NotFoundError

from .base import Evaluator

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "keel.evaluators"
BUILTIN_HOOK = "keel.evals.builtins:register_evaluators"

E = TypeVar("E", bound=type[Evaluator])
RegisterFn = Callable[..., Any]


def normalize_name(name: str) -> str:
    """The lookup key of an evaluator name (case, ``_``, ``-`` and spaces ignored)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


class EvaluatorRegistry:
    """Evaluator classes by name, with lazy loading of built-ins and plugins."""

    def __init__(self, *, load_builtins: bool = True, load_entry_points: bool = True) -> None:
        self._classes: dict[str, type[Evaluator]] = {}
        self._canonical: dict[str, str] = {}
        self._load_builtins = load_builtins
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._lock = threading.RLock()
        self.plugin_errors: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------

    def add(
        self,
        cls: type[Evaluator],
        *,
        name: str | None = None,
        aliases: Iterable[str] = (),
        replace: bool = False,
    ) -> type[Evaluator]:
        """Register ``cls`` under its ``name`` (or ``name``) and ``aliases``."""
        if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
            raise InvalidInputError(f"{cls!r} is not an Evaluator subclass")
        canonical = name or cls.name
        with self._lock:
            for n in (canonical, *aliases, *getattr(cls, "aliases", ())):
                key = normalize_name(n)
                old = self._classes.get(key)
                if old is not None and old is not cls and not replace:
                    raise ConflictError(
                        f"evaluator name {n!r} is taken by {old.__module__}.{old.__qualname__}",
                        hint="pick another name or pass replace=True",
                    )
                self._classes[key] = cls
                self._canonical[key] = canonical
        return cls

    @overload
    def register(self, cls: E) -> E: ...
    @overload
    def register(
        self, cls: None = None, *, name: str | None = None, aliases: Iterable[str] = ()
    ) -> Callable[[E], E]: ...
    def register(
        self, cls: E | None = None, *, name: str | None = None, aliases: Iterable[str] = ()
    ) -> E | Callable[[E], E]:
        """Decorator form of :meth:`add` (``@registry.register`` or ``@registry.register(name=...)``)."""

        def deco(c: E) -> E:
            self.add(c, name=name, aliases=aliases)
            return c

        return deco(cls) if cls is not None else deco

    # -- loading ------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            if self._load_builtins:
                from keel.evals.builtins import LOAD_ERRORS, register_evaluators

                register_evaluators(self.add)
                self.plugin_errors.update({f"builtin:{k}": v for k, v in LOAD_ERRORS.items()})
            if self._load_entry_points:
                self.load_entry_points()

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load third-party evaluators from the ``keel.evaluators`` entry points.

        A broken plugin is logged and recorded in :attr:`plugin_errors`, never fatal.
        """
        for ep in metadata.entry_points(group=group):
            if ep.value.replace(" ", "") == BUILTIN_HOOK and self._load_builtins:
                continue
            try:
                obj = ep.load()
                if isinstance(obj, type) and issubclass(obj, Evaluator):
                    self.add(obj)
                elif callable(obj):
                    obj(self.add)
                else:
                    raise TypeError(f"entry point {ep.name!r} is neither an Evaluator nor a hook")
            except Exception as e:
                log.warning("evaluator plugin %s failed to load: %s", ep.name, e)
                self.plugin_errors[ep.name] = f"{type(e).__name__}: {e}"

    # -- lookup -------------------------------------------------------------------------------

    def get(self, name: str) -> type[Evaluator]:
        """The evaluator class registered as ``name``; raises NotFoundError."""
        self._ensure_loaded()
        cls = self._classes.get(normalize_name(name))
        if cls is None:
            raise NotFoundError(
                f"unknown evaluator {name!r}",
                hint=f"known evaluators: {', '.join(self.names())}",
            )
        return cls

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and normalize_name(name) in self._classes

    def names(self) -> list[str]:
        """Canonical names of every registered evaluator, sorted."""
        self._ensure_loaded()
        seen: dict[type[Evaluator], str] = {}
        for key, cls in self._classes.items():
            canonical = self._canonical[key]
            if normalize_name(canonical) == key:
                seen.setdefault(cls, canonical)
        return sorted(seen.values())

    def create(self, spec: str | Mapping[str, Any] | Evaluator) -> Evaluator:
        """Build an evaluator instance from a spec (see the module docstring)."""
        if isinstance(spec, Evaluator):
            return spec
        if isinstance(spec, str):
            return self._instantiate(self.get(spec), {})
        if not isinstance(spec, Mapping):
            raise InvalidInputError(f"cannot build an evaluator from {type(spec).__name__}")
        if "name" in spec or "type" in spec:
            opts = dict(spec)
            name = opts.pop("name", None) or opts.pop("type")
            opts.pop("type", None)
            return self._instantiate(self.get(str(name)), opts)
        if len(spec) == 1:
            ((name, arg),) = spec.items()
            cls = self.get(str(name))
            if arg is None:
                return self._instantiate(cls, {})
            if isinstance(arg, Mapping):
                return self._instantiate(cls, dict(arg))
            short = getattr(cls, "short_arg", None)
            if not short:
                raise InvalidInputError(
                    f"{cls.name} takes no short argument",
                    hint=f"write {{{cls.name}: {{...options}}}}",
                )
            return self._instantiate(cls, {short: arg})
        raise InvalidInputError(
            "an evaluator spec needs a 'name' key or exactly one key naming the evaluator",
            hint='e.g. {name: Contains, value: "refund"} or {Contains: "refund"}',
        )

    @staticmethod
    def _instantiate(cls: type[Evaluator], opts: dict[str, Any]) -> Evaluator:
        try:
            return cls(**opts)
        except TypeError as e:
            raise InvalidInputError(f"bad options for {cls.name}: {e}") from e


_default = EvaluatorRegistry()


def default_registry() -> EvaluatorRegistry:
    """The process-wide registry used by :func:`register` and :func:`get_evaluator`."""
    return _default


@overload
def register(cls: E) -> E: ...
@overload
def register(
    cls: None = None, *, name: str | None = None, aliases: Iterable[str] = ()
) -> Callable[[E], E]: ...
def register(
    cls: E | None = None, *, name: str | None = None, aliases: Iterable[str] = ()
) -> E | Callable[[E], E]:
    """Register an evaluator class in the default registry (usable as a decorator)."""
    if cls is not None:
        _default.add(cls, name=name, aliases=aliases)
        return cls
    return _default.register(name=name, aliases=aliases)


def get_evaluator(name: str) -> type[Evaluator]:
    """The evaluator class registered as ``name`` in the default registry."""
    return _default.get(name)


def create_evaluator(spec: str | Mapping[str, Any] | Evaluator) -> Evaluator:
    """Build an evaluator from a name, a YAML-style mapping or an instance."""
    return _default.create(spec)


def create_evaluators(specs: Iterable[str | Mapping[str, Any] | Evaluator]) -> list[Evaluator]:
    """Build a list of evaluators (the ``evaluators:`` list of a suite file)."""
    return [create_evaluator(s) for s in specs]


def list_evaluators() -> list[str]:
    """Canonical names of every evaluator in the default registry."""
    return _default.names()
