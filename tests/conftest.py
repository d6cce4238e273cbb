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


@pytest.fixture
def toy_axml(tmp_path: Path) -> Path:
    return write_axml(tmp_path / "toy", {"train": 240, "test": 60})
