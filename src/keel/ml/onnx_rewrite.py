"""Rewrites of ONNX graphs and the checked int8 write shared by the install-time model builds
(tools/build_minilm_qint8.py for the semantic cache's MiniLM, :mod:`keel.ml.grounding_model`
for Groundedness's cross-encoder, :mod:`keel.ml.cache_encoder` for the cache's distilled
encoder). Needs ``onnx`` and ``numpy`` (the ``local`` extra) when called."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "decompose_layernorms",
    "install_main",
    "is_current_build",
    "quiet_root_logger",
    "write_int8_checked",
]


def install_main(
    argv: list[str],
    label: str,
    is_current: Callable[[], bool],
    build: Callable[[], float],
    built_name: str,
    figure: str,
    without: str,
) -> int:
    """The ``python -m ... [--force]`` entry point of an install-time build (``make install``
    runs it): build unless current, print what was built and how well it agrees with its float
    reference (``figure`` formats the check's number). Never fails the install: a missing extra
    or a refused build prints why (``without``: what the user gets instead) and returns 0."""
    import sys
    import time

    if "--force" not in argv and is_current():
        return 0
    t0 = time.perf_counter()
    try:
        value = build()
    except ImportError as e:
        print(f"{label}: skipped ({e}); {without}", file=sys.stderr)
        return 0
    except Exception as e:
        print(f"{label}: not built ({type(e).__name__}: {e}); {without}", file=sys.stderr)
        return 0
    print(
        f"{label}: built {built_name} in {time.perf_counter() - t0:.1f}s ({figure.format(value)})"
    )
    return 0


def write_int8_checked(model: Any, out: Path, recipe: str, check: Callable[[Path], float]) -> float:
    """Quantise the float ONNX ``model`` to int8 (weights per output channel, weight matmuls
    only, activations per run), run ``check`` on the quantised file, then move it to ``out``
    atomically beside a ``.build`` stamp holding ``recipe``. ``check`` returns a figure of
    agreement with the float network (returned here) or raises to refuse the build: nothing is
    written then."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.part")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(fp32))
        with quiet_root_logger():
            quantize_dynamic(
                str(fp32),
                str(part),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # the contrib ops' outputs have no inferred type; they are all float
                extra_options={
                    "MatMulConstBOnly": True,
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                },
            )
    try:
        figure = check(part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(out)
    out.with_name(out.name + ".build").write_text(recipe + "\n")
    return figure


def is_current_build(out: Path, recipe: str, source: Path) -> bool:
    """Whether ``out`` was built by ``recipe`` (its ``.build`` stamp) after ``source`` (the
    committed weights it is built from) last changed."""
    stamp = out.with_name(out.name + ".build")
    try:
        return stamp.read_text().strip() == recipe and out.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return False


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    # the quantizer's advice to run its shape pre-processing (changes nothing for this graph)
    # and the optimizer's progress go to the root logger: keep install output clean
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def decompose_layernorms(model: Any) -> int:
    """Rewrite each ``LayerNormalization`` / ``SkipLayerNormalization`` node as elementwise ops.

    ONNX Runtime's CPU kernels for both normalise element by element with a division in double
    precision: ~2.6 µs per 384-wide row here, ~1.9 ms of a 50-token text over 13 norms, more
    than all the int8 matmuls together. The same arithmetic as ``Add`` (the skip and bias),
    ``ReduceMean``, ``Sub``, ``Mul``, ``ReduceMean``, then one ``Sqrt`` + ``Reciprocal`` per row
    and three vectorised broadcasts runs in about half the time. Returns the number of nodes
    rewritten; raises ``ValueError`` if a node's mean or inverse-deviation output is used.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    nodes: list[Any] = []
    consts: list[Any] = []
    count = 0
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    if opset >= 18:  # axes became an input
        consts.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "keel_ln_axes"))

    def mean_of(x: str, out: str) -> Any:
        if opset >= 18:
            return helper.make_node("ReduceMean", [x, "keel_ln_axes"], [out], keepdims=1)
        return helper.make_node("ReduceMean", [x], [out], axes=[-1], keepdims=1)

    for n in g.node:
        if n.op_type not in ("LayerNormalization", "SkipLayerNormalization"):
            nodes.append(n)
            continue
        count += 1
        p = f"keel_ln{count}_"
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "LayerNormalization":
            if int(attrs.get("axis", -1)) != -1 or any(o in used for o in n.output[1:] if o):
                raise ValueError(f"{n.name}: axis or extra outputs not supported")
            s, gamma = n.input[0], n.input[1]
            beta = n.input[2] if len(n.input) > 2 and n.input[2] else None
        else:
            if any(o in used for o in n.output[1:3] if o):
                raise ValueError(f"{n.name}: mean / inv_std outputs in use")
            x, skip, gamma = n.input[:3]
            beta = n.input[3] if len(n.input) > 3 and n.input[3] else None
            bias = n.input[4] if len(n.input) > 4 and n.input[4] else None
            nodes.append(helper.make_node("Add", [x, skip], [p + "sum"]))
            s = p + "sum"
            if bias:
                nodes.append(helper.make_node("Add", [s, bias], [p + "sumb"]))
                s = p + "sumb"
            if len(n.output) > 3 and n.output[3] and n.output[3] in used:
                nodes.append(helper.make_node("Identity", [s], [n.output[3]]))
        eps = float(attrs.get("epsilon", 1e-12))
        consts.append(numpy_helper.from_array(np.array(eps, dtype=np.float32), p + "eps"))
        last = p + "scaled" if beta else n.output[0]
        nodes += [
            mean_of(s, p + "mean"),
            helper.make_node("Sub", [s, p + "mean"], [p + "dev"]),
            helper.make_node("Mul", [p + "dev", p + "dev"], [p + "sq"]),
            mean_of(p + "sq", p + "var"),
            helper.make_node("Add", [p + "var", p + "eps"], [p + "vare"]),
            helper.make_node("Sqrt", [p + "vare"], [p + "std"]),
            helper.make_node("Reciprocal", [p + "std"], [p + "inv"]),
            helper.make_node("Mul", [p + "dev", p + "inv"], [p + "norm"]),
            helper.make_node("Mul", [p + "norm", gamma], [last]),
        ]
        if beta:
            nodes.append(helper.make_node("Add", [last, beta], [n.output[0]]))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(consts)
    return count
