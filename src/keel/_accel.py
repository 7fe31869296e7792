"""Compiled twins of hot pure-Python modules.

A few modules on the ingest path (``keel.otlp.dialects``, ``keel.storage.sql.rows``) are plain
Python, the only source. ``tools/build_ext.py`` (run by ``make install``) also compiles each
of them with Cython into a *twin* extension module beside it (``_dialects_c``, ``_rows_c``),
stamped with the SHA-256 of the source it was built from. At the end of its own import the
Python module calls :func:`use_compiled`, which swaps in the twin's versions of the named
functions, but only when the stamp matches the ``.py`` file now on disk: an edited module
never runs stale compiled code, it simply runs as Python until the next build.

``KEEL_NO_COMPILED=1`` turns every twin off (to compare, or to debug in pure Python).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Iterable
from typing import Any

_log = logging.getLogger("keel.accel")

#: module name → its twin's module name, for every twin that was swapped in
ACTIVE: dict[str, str] = {}


def twin_name(module: str) -> str:
    """``keel.otlp.dialects`` → ``keel.otlp._dialects_c``."""
    pkg, _, leaf = module.rpartition(".")
    return f"{pkg}._{leaf}_c"


def source_sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def use_compiled(namespace: dict[str, Any], names: Iterable[str]) -> bool:
    """Replace ``names`` in a module's ``namespace`` (its ``globals()``) by the compiled twin's.

    The Python originals stay reachable as ``_py_<name>``. Returns whether the twin is in use.
    """
    module = namespace["__name__"]
    if module.rpartition(".")[2].startswith("_"):  # the twin importing its own source copy
        return False
    if os.environ.get("KEEL_NO_COMPILED"):
        return False
    try:
        twin = importlib.import_module(twin_name(module))
    except ImportError:
        return False
    try:
        fresh = getattr(twin, "__keel_source_sha__", None) == source_sha(namespace["__file__"])
    except OSError:
        fresh = False
    if not fresh:
        _log.info("compiled %s is stale (its source changed); using Python", twin.__name__)
        return False
    for name in names:
        namespace["_py_" + name] = namespace[name]
        namespace[name] = getattr(twin, name)
    ACTIVE[module] = twin.__name__
    return True
