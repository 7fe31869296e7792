"""Compiled twins (``keel._accel``) compute exactly what their Python source computes.

``tools/build_ext.py`` compiles ``keel.otlp.dialects`` and ``keel.storage.sql.rows`` with Cython
into ``_dialects_c`` / ``_rows_c``; the modules swap the twins' functions in only while the
twin's source stamp matches the ``.py`` on disk. Checked here: equality with the Python
originals on the real-library fixture corpus and on the bench's agent traces, the stale-stamp
and opt-out rules, and (in CI) that the twins are built and in use.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from _ingest_helpers import agent_trace

from keel import _accel
from keel.otlp import dialects
from keel.otlp.decode import decode_request
from keel.storage.spans import SpanRecord
from keel.storage.sql import rows

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "otlp").glob("*/*.pb"))
TWINNED = {"keel.otlp.dialects": dialects, "keel.storage.sql.rows": rows}


def _corpus() -> list[Any]:
    spans = [
        s for p in FIXTURES for s in decode_request(p.read_bytes(), "application/x-protobuf").spans
    ]
    for i in range(5):
        spans += agent_trace(f"{i:032x}", start_ms=i * 10)
    assert len(spans) > 40
    return spans


def test_twins_are_built_and_used_in_ci() -> None:
    missing = [m for m in TWINNED if m not in _accel.ACTIVE]
    if missing and os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"compiled twins not in use for {missing}: run tools/build_ext.py")
    if missing:
        pytest.skip(f"compiled twins not built for {missing}")


def _dump(x: Any) -> Any:
    return None if x is None else x.model_dump()


@pytest.mark.skipif("keel.otlp.dialects" not in _accel.ACTIVE, reason="twin not built")
@pytest.mark.parametrize("index_only", [True, False])
def test_llm_view_twin_equals_python(index_only: bool) -> None:
    compiled, python = dialects.to_llm_call, dialects._py_to_llm_call  # type: ignore[attr-defined]
    assert compiled is not python
    seen = 0
    for span in _corpus():
        want = python(span, index_only=index_only)
        assert _dump(compiled(span, index_only=index_only)) == _dump(want), span.name
        # the attribute-mapping form too
        assert _dump(compiled(span.attributes)) == _dump(python(span.attributes))
        seen += want is not None
    assert seen > 20


@pytest.mark.skipif("keel.storage.sql.rows" not in _accel.ACTIVE, reason="twin not built")
def test_row_twins_equal_python() -> None:
    from keel.server.ingest import _load_pricer, understand

    pricer = _load_pricer()
    recs = [SpanRecord(s, understand(s, pricer, index_only=True)) for s in _corpus()]
    py_rows = [rows._py_span_row(r, {}) for r in recs]  # type: ignore[attr-defined]
    c_rows = [rows.span_row(r, {}) for r in recs]
    assert c_rows == py_rows
    assert rows.batch_index(c_rows) == rows._py_batch_index(py_rows)  # type: ignore[attr-defined]

    class Row:  # what the SQL layer hands back: attribute access by column name
        def __init__(self, values: tuple[Any, ...]) -> None:
            from keel.storage.sql.spans import _SPAN_COLS

            self.__dict__.update(zip(_SPAN_COLS, values, strict=True))

    for r in c_rows:
        a = rows.span_from_row(Row(r))
        b = rows._py_span_from_row(Row(r))  # type: ignore[attr-defined]
        assert a.model_dump() == b.model_dump()


def test_stale_twin_is_not_used(tmp_path: Path) -> None:
    """A twin whose stamp does not match the source file on disk is ignored."""
    src = Path(dialects.__file__)
    copy = tmp_path / "dialects.py"
    shutil.copy(src, copy)
    ns: dict[str, Any] = {"__name__": "keel.otlp.dialects", "__file__": str(copy), "f": len}
    fresh = "keel.otlp.dialects" in _accel.ACTIVE
    assert _accel.use_compiled(dict(ns), []) is fresh  # same bytes: the stamp matches
    copy.write_text(src.read_text() + "\n# edited\n")
    ns2 = dict(ns)
    assert _accel.use_compiled(ns2, ["f"]) is False
    assert ns2["f"] is len and "_py_f" not in ns2


def test_opt_out_and_private_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    ns: dict[str, Any] = {"__name__": "keel.otlp.dialects", "__file__": dialects.__file__, "x": 1}
    monkeypatch.setenv("KEEL_NO_COMPILED", "1")
    assert _accel.use_compiled(ns, ["x"]) is False and ns["x"] == 1
    monkeypatch.delenv("KEEL_NO_COMPILED")
    # the twin runs its own copy of the source, whose call must be a no-op
    private = {"__name__": "keel.otlp._dialects_c", "__file__": dialects.__file__, "x": 1}
    assert _accel.use_compiled(private, ["x"]) is False and private["x"] == 1
    # no twin at all for a module that was never compiled
    nothing = {"__name__": "keel.core.ids", "__file__": dialects.__file__, "x": 1}
    assert _accel.use_compiled(nothing, ["x"]) is False


def test_python_path_still_works_with_twins_off() -> None:
    """With KEEL_NO_COMPILED=1 a fresh interpreter runs the pure-Python functions."""
    import subprocess

    code = (
        "import keel.otlp.dialects as d, keel.storage.sql.rows as r, keel._accel as a;"
        "assert not a.ACTIVE, a.ACTIVE;"
        "assert type(d.to_llm_call).__name__ == 'function';"
        "assert type(r.span_row).__name__ == 'function'"
    )
    env = {**os.environ, "KEEL_NO_COMPILED": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    importlib.import_module("keel.otlp.dialects")
