"""The models an attack run attacks: xmtc checkpoints and Hugging Face sequence classifiers, each checked
against (and put in the column order of) the dataset's label space.

A checkpoint is restored as the class it was trained as (Lightning's ``_class_path`` hyperparameter, which
``python -m xmtc fit`` writes), else as the class the config names; the config's model is never built.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xmtc.errors import UserError

#: how many differing label ids an error message lists
_SHOWN = 5


def checkpoint_class(path: str | Path, fallback: type | None) -> type:
    """The LightningModule class a checkpoint was trained as (its ``_class_path`` hyperparameter; read memory
    mapped, so the weights are not loaded for it), else ``fallback``."""
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # an older or foreign format: the fallback (load_from_checkpoint reports real damage)
        ckpt = {}
    class_path = (ckpt.get("hyper_parameters") or {}).get("_class_path") if isinstance(ckpt, dict) else None
    if class_path:
        module, _, name = str(class_path).rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"checkpoint {path} was trained as {class_path}, which cannot be imported ({e})") from e
    if fallback is None:
        raise UserError(f"checkpoint {path} does not name its model class (it was not written by `python -m xmtc "
                        "fit`); give the model's class with --model / a config with model.class_path")
    return fallback


def load_checkpoint(path: str | Path, fallback: type | None, label_ids: Sequence[str], data_dir: str) -> Any:
    """An xmtc model restored from ``path`` on the CPU in eval mode; its label space must be the data's."""
    model = checkpoint_class(path, fallback).load_from_checkpoint(path, map_location="cpu")
    if list(model.label_stats.label_ids) != list(label_ids):
        raise UserError(f"checkpoint {path} was trained on another label space than {data_dir}: "
                        "is it from another dataset?")
    return model.eval()


def label_columns(model_ids: Sequence[str] | None, data_ids: Sequence[str], what: str) -> list[int] | None:
    """For each label of the data, the model's column of the same id (None: the orders already agree).

    The two label spaces must hold the same ids; ``what`` names the model in the error."""
    if model_ids is None:
        raise UserError(f"{what} has no label names (config.id2label holds transformers' LABEL_i placeholders); "
                        "save it with id2label set to the dataset's label ids to attack it on this dataset")
    model_ids, data_ids = [str(i) for i in model_ids], [str(i) for i in data_ids]
    if model_ids == data_ids:
        return None
    column = {lab: i for i, lab in enumerate(model_ids)}
    missing = [lab for lab in data_ids if lab not in column]
    extra = sorted(set(model_ids) - set(data_ids))
    if missing or extra or len(model_ids) != len(data_ids):
        said = []
        if missing:
            said.append(f"{len(missing)} of the data's labels are not among the model's (e.g. {missing[:_SHOWN]})")
        if extra:
            said.append(f"{len(extra)} of the model's labels are not the data's (e.g. {extra[:_SHOWN]})")
        if not said:
            said.append("the model lists a label id twice")
        raise UserError(f"{what} has another label space than the data: {'; '.join(said)}")
    return [column[lab] for lab in data_ids]


class ReorderedClassifier:
    """A classifier whose label columns are put in the data's order (``columns[i]``: the wrapped model's
    column of the data's label i); scoring, log-odds, what it reads and word gradients pass through."""

    def __init__(self, base: Any, columns: Sequence[int], label_ids: Sequence[str]) -> None:
        self.base = base
        self.columns = torch.as_tensor(list(columns), dtype=torch.long)
        self.label_ids = list(label_ids)
        self.visible_text = base.visible_text
        if hasattr(base, "word_gradients"):
            self.word_gradients = lambda text, labels: base.word_gradients(text, self._base_labels(labels))

    def _base_labels(self, labels: Sequence[int] | None) -> list[int]:
        return (self.columns if labels is None else self.columns[torch.as_tensor(list(labels), dtype=torch.long)]
                ).tolist()

    def score_texts(self, texts: Sequence[str], batch_size: int = 64, labels: Sequence[int] | None = None,
                    logits: bool = False) -> Tensor:
        return self.base.score_texts(texts, batch_size, labels=self._base_labels(labels), logits=logits)

    def __repr__(self) -> str:
        return f"ReorderedClassifier({self.base!r})"


def load_hf_classifier(path: str, label_ids: Sequence[str], device: str | torch.device) -> Any:
    """A Hugging Face multilabel sequence classifier (``xmtc.attack.classifier.HuggingFaceClassifier``) on
    ``device``, its columns matched to the data's label ids by id."""
    from xmtc.attack.classifier import HuggingFaceClassifier

    model = HuggingFaceClassifier(path, device=device)
    columns = label_columns(model.label_ids, label_ids, f"--hf_model {path}")
    return model if columns is None else ReorderedClassifier(model, columns, label_ids)
