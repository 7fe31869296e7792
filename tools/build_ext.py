"""Build Keel's optional compiled accelerators in place (``make install`` runs this).

    .venv/bin/python tools/build_ext.py

* ``keel.otlp._fastpb``, the OTLP protobuf fast path (``keel.otlp.decode`` falls back to the
  pure-Python decoder without it);
* compiled *twins* of pure-Python hot modules (``keel.otlp.dialects``,
  ``keel.storage.sql.rows``): the same ``.py`` source compiled by Cython under a private name,
  stamped with the source's SHA-256; the module swaps in the twin's functions only while the
  stamp matches (see :mod:`keel._accel`).

Keel works without any of them; with them, ingest costs less CPU per span
(docs/bench-tracing.md). Needs Cython, setuptools and a C compiler; when any is missing this
prints why and exits 0, so an install never fails because of it. Unchanged sources are not
rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS = {"keel.otlp._fastpb": "src/keel/otlp/_fastpb.pyx"}
TWINS = ["keel.otlp.dialects", "keel.storage.sql.rows"]
TWIN_DIR = ROOT / "build" / "twins"


def _twin_sources() -> dict[str, str]:
    """Stamped copies of the twinned modules' sources, written under build/twins/."""
    out = {}
    TWIN_DIR.mkdir(parents=True, exist_ok=True)
    for module in TWINS:
        pkg, _, leaf = module.rpartition(".")
        src = ROOT / "src" / Path(*module.split(".")).with_suffix(".py")
        data = src.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        copy = TWIN_DIR / f"_{leaf}_c.py"
        stamped = data + f"\n__keel_source_sha__ = {sha!r}\n".encode()
        if not copy.exists() or copy.read_bytes() != stamped:
            copy.write_bytes(stamped)  # cythonize rebuilds only when this file changed
        out[f"{pkg}._{leaf}_c"] = str(copy.relative_to(ROOT))
    return out


def main() -> int:
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as e:
        print(f"build_ext: skipped ({e}); Keel uses its pure-Python decoder")
        return 0
    os.chdir(ROOT)
    sources = {**EXTENSIONS, **_twin_sources()}
    exts = [Extension(name, [src], extra_compile_args=["-O2"]) for name, src in sources.items()]
    dist = Distribution(
        {"ext_modules": cythonize(exts, quiet=True, language_level=3), "package_dir": {"": "src"}}
    )
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.build_lib = "src"
    cmd.build_temp = str(ROOT / "build" / "temp")
    try:
        dist.run_command("build_ext")
    except Exception as e:  # no compiler, headers missing …
        print(f"build_ext: failed ({e}); Keel uses its pure-Python decoder", file=sys.stderr)
        return 0
    print("build_ext: built " + ", ".join(sources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
