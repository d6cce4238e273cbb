"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from toydata import write_axml

# Tests are offline: no W&B account, no model hubs (everything they load is built locally).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the workers (make test: one per core) share the cores: one torch thread each, in this process and in the
    # ones it starts; two threads on a busy core are several times slower for the tests' tiny models
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before this file


@pytest.fixture
def toy_axml(tmp_path: Path) -> Path:
    return write_axml(tmp_path / "toy", {"train": 240, "test": 60})


@pytest.fixture(scope="session")
def tiny_attack_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny masked LM (trained) and sentence encoder (random) on the toy corpus, shared by the attack tests."""
    pytest.importorskip("sentence_transformers")
    from tiny_models import build_tiny_mlm, build_tiny_sentence_transformer
    from toydata import toy_corpus

    root = tmp_path_factory.mktemp("attack_models")
    texts, _ = toy_corpus(300, seed=7)
    return (build_tiny_mlm(root / "mlm", corpus=texts, steps=60),
            build_tiny_sentence_transformer(root / "encoder", corpus=texts))


@pytest.fixture(scope="session")
def hf_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multilabel BertForSequenceClassification trained on the toy corpus, saved with save_pretrained."""
    from tiny_models import build_tiny_hf_classifier
    from toydata import toy_corpus

    texts, labels = toy_corpus(320, seed=3)
    return build_tiny_hf_classifier(tmp_path_factory.mktemp("hf") / "toy-bert", texts, labels)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files that hold a slow test first: make test's workers start the longest work first instead of waiting on
    it at the end (the order within each group stays)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
