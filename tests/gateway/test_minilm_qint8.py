"""The semantic cache's int8-compute MiniLM (tools/build_minilm_qint8.py, built by make install)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.gateway.provider import CacheScope
from keel.gateway.semantic_cache import SemanticCache
from keel.ml import embeddings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not embeddings.embeddings_available(), reason="local embeddings not installed"
)

PAIRS = [
    ("How do I reset my password?", "How can I reset my password?"),
    (
        "What is the refund window for online orders?",
        "How long do I have to return something I bought online?",
    ),
    ("Which is the best way to learn Python quickly?", "How can I learn Python fast?"),
    ("Why is the sky blue?", "What makes the sky look blue?"),
    ("How do I delete my account?", "How do I change my shipping address?"),
    ("What is the capital of France?", "What is the population of France?"),
    ("Is smoking allowed in the hotel rooms?", "Can I bring my dog to the hotel?"),
    ("Translate 'good morning' to Spanish", "What time does the store open on Sunday?"),
    ("My package arrived damaged, what should I do?", "The parcel I received is broken. What now?"),
    (
        "Explain the difference between a Roth IRA and a traditional IRA.",
        "Roth vs traditional IRA?",
    ),
]


@pytest.fixture(scope="module")
def both() -> tuple[Any, Any]:
    assert embeddings.QINT8_PATH.exists(), "make install builds it (tools/build_minilm_qint8.py)"
    return embeddings.Embedder(cache_size=0), embeddings.Embedder(cache_size=0, variant="qint8")


def test_the_cache_runs_its_encoders_int8_build() -> None:
    import asyncio

    async def go() -> Any:
        cache = SemanticCache()
        scope = CacheScope("p", "r", "m", "1")
        q = {"messages": [{"role": "user", "content": "How do I reset my password?"}]}
        a = {"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]}
        assert await cache.store(scope, q, a)
        return cache._embedder

    emb = asyncio.run(go())
    from keel.gateway.semantic_cache import DEFAULT_ENCODER, ENCODERS

    assert emb is embeddings.get_embedder(ENCODERS[DEFAULT_ENCODER])  # type: ignore[arg-type]
    six = SemanticCache(encoder="minilm")
    assert six.embedder is embeddings.get_embedder("qint8")
    assert six.embedder.model == embeddings.QINT8_MODEL_NAME  # type: ignore[attr-defined]
    assert embeddings.get_embedder().model == embeddings.MODEL_NAME  # evaluators: unchanged


def test_int8_vectors_stay_close_to_the_packaged_ones(both: tuple[Any, Any]) -> None:
    packaged, qint8 = both
    texts = [t for pair in PAIRS for t in pair]
    a, b = packaged.embed(texts), qint8.embed(texts)
    per_text = (a * b).sum(1)
    assert per_text.min() > 0.985, per_text.round(3)
    sim_a = np.array([a[2 * i] @ a[2 * i + 1] for i in range(len(PAIRS))])
    sim_b = np.array([b[2 * i] @ b[2 * i + 1] for i in range(len(PAIRS))])
    assert np.abs(sim_a - sim_b).max() < 0.03, (sim_a.round(3), sim_b.round(3))
    # the order of pairs by similarity is what the cache decides on: it holds
    assert np.corrcoef(sim_a, sim_b)[0, 1] > 0.98
    # and it is a different computation, not the same file under another name
    assert np.abs(a - b).max() > 1e-4


def test_missing_build_falls_back_to_the_packaged_model(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embeddings, "QINT8_PATH", Path("/nonexistent/minilm-l6-qint8.onnx"))
    with caplog.at_level(logging.WARNING, logger="keel.ml"):
        emb = embeddings.Embedder(cache_size=0, variant="qint8")
    assert emb.model == embeddings.MODEL_NAME
    assert "build_minilm_qint8" in caplog.text
    ref = embeddings.Embedder(cache_size=0).embed_one("a plain sentence")
    assert float(emb.embed_one("a plain sentence") @ ref) > 0.9999


def test_unreadable_build_falls_back_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "minilm-l6-qint8.onnx"
    broken.write_bytes(b"\x08\x07not an onnx model" * 100)
    monkeypatch.setattr(embeddings, "QINT8_PATH", broken)
    with caplog.at_level(logging.WARNING, logger="keel.ml"):
        emb = embeddings.Embedder(cache_size=0, variant="qint8")
    assert emb.model == embeddings.MODEL_NAME
    assert "does not load" in caplog.text
    assert emb.embed_one("still works").shape == (embeddings.DIMENSIONS,)


def _load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("build_q", ROOT / "tools/build_minilm_qint8.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_tool_is_deterministic_and_quantizes_matmuls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, both: tuple[Any, Any]
) -> None:
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "minilm-l6-qint8.onnx"
    monkeypatch.setattr(embeddings, "QINT8_PATH", out)
    mod = _load_tool()
    root_level = logging.getLogger().level
    assert mod.main(["--force"]) == 0
    assert logging.getLogger().level == root_level  # the tool leaves logging as it found it
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    # attention fused into one quantized node per layer; the weight matmuls are int8
    assert ops.count("QAttention") == 6
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert "Softmax" not in ops and "Transpose" not in ops
    assert out.with_name(out.name + ".build").read_text().strip() == mod.RECIPE
    built = embeddings.Embedder(cache_size=0, variant="qint8")  # reads the patched path
    v = built.embed_one("How do I reset my password?")
    assert float(v @ both[1].embed_one("How do I reset my password?")) > 0.99999
    # in a padded batch the fused node reads the mask: short texts keep their vectors (dynamic
    # int8 makes a vector depend a little on its batch, ~0.99; ignored padding gives far less)
    texts = [t for pair in PAIRS for t in pair] + ["hi"]
    batched = embeddings.Embedder(cache_size=0, variant="qint8").embed(texts)
    reference = both[0].embed(texts)
    assert (reference * batched).sum(1).min() > 0.97
    # up to date: not rebuilt
    mtime = out.stat().st_mtime_ns
    assert mod.main([]) == 0
    assert out.stat().st_mtime_ns == mtime
    # a build from an earlier recipe is replaced
    out.with_name(out.name + ".build").write_text(mod.RECIPE_UNFUSED + "\n")
    assert mod.main([]) == 0
    assert out.stat().st_mtime_ns != mtime


def test_build_tool_falls_back_to_the_unfused_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "minilm-l6-qint8.onnx"
    monkeypatch.setattr(embeddings, "QINT8_PATH", out)
    mod = _load_tool()

    def no_pattern(model: Any) -> int:
        raise ValueError("attention layers not found")

    monkeypatch.setattr(mod, "fuse_attention", no_pattern)
    assert mod.main(["--force"]) == 0
    assert "fell back" in capsys.readouterr().err
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QAttention" not in ops and "MatMulInteger" in ops
    assert out.with_name(out.name + ".build").read_text().strip() == mod.RECIPE_UNFUSED


def test_build_tool_writes_nothing_that_fails_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    out = tmp_path / "minilm-l6-qint8.onnx"
    monkeypatch.setattr(embeddings, "QINT8_PATH", out)
    mod = _load_tool()
    monkeypatch.setattr(mod, "check", lambda candidate, reference: 0.5)
    assert mod.main(["--force"]) == 0  # never fails the install
    assert "not built" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".part").exists()


def test_fuse_attention_rejects_a_graph_without_the_pattern() -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    mod = _load_tool()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(ValueError, match="attention layers not found"):
        mod.fuse_attention(helper.make_model(graph))


@pytest.mark.parametrize("opset", [17, 18])
def test_layernorm_rewrite_computes_the_same(opset: int) -> None:
    pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    mod = _load_tool()
    rng = np.random.default_rng(0)
    h = 16

    def init(name: str, shape: tuple[int, ...]) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "g1", "b1", "bias"],
            ["y1", "", "", "sum"],
            domain="com.microsoft",
            epsilon=1e-12,
        ),
        helper.make_node("LayerNormalization", ["y1", "g2", "b2"], ["y2"], axis=-1, epsilon=1e-5),
        helper.make_node("Add", ["y2", "sum"], ["out"]),  # the skip-sum output stays in use
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", h]),
            helper.make_tensor_value_info("skip", TensorProto.FLOAT, [1, "T", h]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "T", h])],
        [
            init("g1", (h,)),
            init("b1", (h,)),
            init("bias", (h,)),
            init("g2", (h,)),
            init("b2", (h,)),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
    )
    feeds = {
        "x": rng.standard_normal((1, 7, h)).astype(np.float32) * 3,
        "skip": rng.standard_normal((1, 7, h)).astype(np.float32),
    }

    def run(m: Any) -> Any:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)[0]

    before = run(model)
    assert mod.decompose_layernorms(model) == 2
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"LayerNormalization", "SkipLayerNormalization"}
    assert np.allclose(run(model), before, atol=1e-4)


def test_layernorm_rewrite_refuses_a_used_statistics_output() -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    mod = _load_tool()
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y", "mean"], axis=-1)
    graph = helper.make_graph(
        [node, helper.make_node("Identity", ["mean"], ["m"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 1])],
    )
    with pytest.raises(ValueError, match="extra outputs"):
        mod.decompose_layernorms(helper.make_model(graph))
