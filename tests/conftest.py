"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from toydata import write_axml

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def toy_axml(tmp_path: Path) -> Path:
    return write_axml(tmp_path / "toy", {"train": 240, "test": 60})
