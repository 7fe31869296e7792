"""Build Keel's optional compiled accelerators in place (``make install`` runs this).

    .venv/bin/python tools/build_ext.py

Today there is one: ``keel.otlp._fastpb``, the OTLP protobuf fast path. Keel works without it
(``keel.otlp.decode`` falls back to the pure-Python decoder); with it, ingest costs far less
CPU per span (docs/bench-tracing.md). Needs Cython, setuptools and a C compiler; when any is
missing this prints why and exits 0, so an install never fails because of it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS = {"keel.otlp._fastpb": "src/keel/otlp/_fastpb.pyx"}


def main() -> int:
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as e:
        print(f"build_ext: skipped ({e}); Keel uses its pure-Python decoder")
        return 0
    os.chdir(ROOT)
    exts = [Extension(name, [src], extra_compile_args=["-O2"]) for name, src in EXTENSIONS.items()]
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
    print("build_ext: built " + ", ".join(EXTENSIONS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
