"""Hugging Face subword tokenizers (APLC-XLNet): loading by name or path, and a copy inside the checkpoint.

The checkpoint keeps the tokenizer's saved files (``save_pretrained``: ``tokenizer.json``, its config,
a SentencePiece model for ``xlnet-base-cased``) as bytes, so a checkpoint alone rebuilds the exact
tokenizer it was trained with, with no hub access and no path that must still exist.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from xmtc.model_paths import SUBWORD_TOKENIZER, check_model_path, hub_offline, load_error


def load_subword_tokenizer(name_or_path: str, max_length: int | None = None,
                           data_dir: str | None = None) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with an error that says what to do offline; ``max_length`` caps inputs.
    A missing local folder (``xmtc.model_paths``' rule) fails at once, never a hub lookup; ``data_dir`` goes
    into the hint of how to train one."""
    name = check_model_path(name_or_path, SUBWORD_TOKENIZER, data=data_dir)
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=hub_offline())
    except (OSError, ValueError) as e:
        raise load_error(SUBWORD_TOKENIZER, name_or_path, e, data=data_dir) from e
    if max_length is not None:
        tok.model_max_length = max_length
    return tok


def tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The tokenizer's saved files as ``{"files": {name: bytes}}``, for the checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    return {"files": files}


def tokenizer_from_state(state: dict[str, Any]) -> PreTrainedTokenizerBase:
    """Rebuild a tokenizer saved by :func:`tokenizer_state`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in state["files"].items():
            (Path(tmp) / name).write_bytes(data)
        return AutoTokenizer.from_pretrained(tmp)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map the same tokens to the same ids (what a trained embedding depends on)."""
    return a.get_vocab() == b.get_vocab()
