"""LightningDataModule for XMTC corpora in AttentionXML raw-text or APLC-XLNet CSV form.

Batches carry raw texts and dense 0/1 targets; the model turns texts into tensors itself (the same
path it uses to score raw text for the attack suite), so data and model cannot disagree on it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xmtc.data.label_stats import LabelStats, propensity_preset
from xmtc.data.readers import (
    DataFormatError,
    RawSplit,
    has_split,
    read_label_names,
    read_split,
    read_text_lines,
)
from xmtc.data.tokenizer import WordTokenizer
from xmtc.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class LabelledTexts(Dataset):
    """Texts with their label indices (ragged); targets are densified per batch, never per dataset."""

    def __init__(self, texts: list[str], labels: list[np.ndarray] | None, ids: list[str] | None = None) -> None:
        self.texts = texts
        self.labels = labels
        self.ids = ids  # the dataset's own document ids (what attack results name documents by)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[int, str, np.ndarray | None]:
        return i, self.texts[i], None if self.labels is None else self.labels[i]


class Collate:
    """Batch of ``{"index", "texts", "targets"}`` with a dense (B, L) float target matrix."""

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels

    def __call__(self, items: list[tuple[int, str, np.ndarray | None]]) -> dict[str, Any]:
        index, texts, labels = zip(*items, strict=True)
        batch: dict[str, Any] = {"index": torch.tensor(index), "texts": list(texts)}
        if labels[0] is not None:
            rows = np.repeat(np.arange(len(labels)), [len(y) for y in labels])
            cols = np.concatenate(labels)
            targets = torch.zeros(len(labels), self.num_labels)
            targets[torch.from_numpy(rows), torch.from_numpy(cols)] = 1.0
            batch["targets"] = targets
        return batch


class XMTCDataModule(L.LightningDataModule):
    """An XMTC dataset directory: splits, label statistics and the word vocabulary.

    Args:
        data_dir: directory in AttentionXML form (``{split}_raw_texts.txt[.gz]``, ``{split}_labels.txt``,
            optional ``label_names.tsv``) or APLC-XLNet form (``{split}.csv``, ``labels.txt``).
        val_split: name of the validation split; when its files are absent, ``val_fraction`` of the
            training documents are held out (seeded) instead.
        val_fraction: share of training documents carved out for validation when needed (0 = none).
        test_split: name of the test split.
        predict_file: raw text file (one document per line, ``.txt`` or ``.txt.gz``) for ``predict``.
        tokenizer: name or local directory of a Hugging Face subword tokenizer (``xlnet-base-cased``, or
            one trained by ``python -m xmtc.data.train_tokenizer``) for APLC-XLNet; ``None`` (default)
            builds the word vocabulary of the training split for AttentionXML.
        max_length: words (word vocabulary) or subword tokens (``tokenizer``) kept per document.
        max_vocab_size: most frequent training words kept; others map to ``<unk>`` (word vocabulary only).
        min_word_freq: minimum training count of a vocabulary word (word vocabulary only).
        lowercase: lower-case before tokenizing (word vocabulary only; a subword tokenizer decides itself).
        propensity: Jain et al. (A, B) for inverse propensities: a preset named after its dataset, as the
            Extreme Classification Repository uses them (``wikilshtc-325k``/``wikipedia-500k`` 0.5/0.4,
            ``amazon-670k``/``amazon-3m`` 0.6/2.6; ``eurlex57k``, ``wiki10-31k``, ``amazoncat-13k`` and
            ``default`` 0.55/1.5), or an explicit ``[A, B]``.
        batch_size: training batch size (per device).
        eval_batch_size: batch size for validation, test and predict (default: ``batch_size``).
        num_workers: DataLoader workers.
        on_invalid: ``error`` stops at the first bad document naming file and line; ``skip`` drops
            empty documents, undecodable lines and blank label lines, printing one count per split.
        seed: seed of the validation carve-out.
    """

    def __init__(
        self,
        data_dir: str = "data/eurlex57k-demo",
        val_split: str = "dev",
        val_fraction: float = 0.1,
        test_split: str = "test",
        predict_file: str | None = None,
        tokenizer: str | None = None,
        max_length: int = 500,
        max_vocab_size: int = 100_000,
        min_word_freq: int = 1,
        lowercase: bool = True,
        propensity: str | tuple[float, float] = "default",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_invalid: Literal["error", "skip"] = "error",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if isinstance(propensity, str):
            try:
                propensity_preset(propensity)  # fail at construction, naming the field
            except ValueError as e:
                raise UserError(str(e)) from None
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.datasets: dict[str, LabelledTexts] = {}

    # -- label space and vocabulary: read once, cached; needed at instantiation by argument linking --

    @cached_property
    def _train_and_carved_val(self) -> tuple[RawSplit, RawSplit | None]:
        if not self.data_dir.is_dir():
            state = "is not a directory" if self.data_dir.exists() else "does not exist"
            raise DataFormatError(f"data directory {self.data_dir} {state} (data.init_args.data_dir): give a dataset "
                                  "directory in AttentionXML raw-text or APLC-XLNet CSV form (README: Using it on "
                                  "your own data)")
        train = read_split(self.data_dir, "train", on_invalid=self.hparams.on_invalid)
        if has_split(self.data_dir, self.hparams.val_split) or self.hparams.val_fraction == 0:
            return train, None
        n = len(train.texts)
        perm = np.random.default_rng(self.hparams.seed).permutation(n)
        n_val = max(1, int(round(n * self.hparams.val_fraction)))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

        def take(idx: np.ndarray, name: str) -> RawSplit:
            return RawSplit([train.texts[i] for i in idx], [train.labels[i] for i in idx],
                            [train.ids[i] for i in idx], f"{train.source} ({name})")

        return take(train_idx, "train part"), take(val_idx, f"seeded {self.hparams.val_fraction:.0%} validation part")

    @property
    def train_split(self) -> RawSplit:
        return self._train_and_carved_val[0]

    @cached_property
    def label_stats(self) -> LabelStats:
        """Label space = labels seen in the training split, most frequent first."""
        train = self.train_split
        counts = Counter(lab for labels in train.labels for lab in labels)
        label_ids = sorted(counts, key=lambda lab: (-counts[lab], lab))
        names = read_label_names(self.data_dir)
        propensity = self.hparams.propensity
        a, b = propensity_preset(propensity) if isinstance(propensity, str) else propensity
        return LabelStats(
            label_ids=label_ids,
            label_names=[names.get(lab, lab) for lab in label_ids],
            freqs=np.array([counts[lab] for lab in label_ids], dtype=np.int64),
            num_train_docs=len(train.texts),
            propensity_a=float(a),
            propensity_b=float(b),
        )

    @property
    def num_labels(self) -> int:
        return len(self.label_stats)

    @cached_property
    def tokenizer(self) -> WordTokenizer | PreTrainedTokenizerBase:
        """Word vocabulary of the training split (AttentionXML), or the subword tokenizer named by ``tokenizer``."""
        if self.hparams.tokenizer is not None:
            from xmtc.data.subword import load_subword_tokenizer

            return load_subword_tokenizer(self.hparams.tokenizer, max_length=self.hparams.max_length,
                                          data_dir=str(self.data_dir))
        return WordTokenizer.build(
            self.train_split.texts,
            max_size=self.hparams.max_vocab_size,
            min_freq=self.hparams.min_word_freq,
            lowercase=self.hparams.lowercase,
            max_length=self.hparams.max_length,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    # -- Lightning hooks --

    @cached_property
    def _label_index(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.label_stats.label_ids)}

    def label_index(self, labels: list[str]) -> np.ndarray:
        """Indices of the labels in the label space (labels outside it are dropped)."""
        index = self._label_index
        return np.array([index[lab] for lab in labels if lab in index], dtype=np.int64)

    def _labelled(self, split: RawSplit, name: str) -> LabelledTexts:
        index = self._label_index
        unseen = Counter(lab for labels in split.labels for lab in labels if lab not in index)
        if unseen and name != "train":
            warnings.warn(
                f"{split.source}: {len(unseen)} labels ({sum(unseen.values())} assignments) never occur in "
                f"training; they are outside the label space and ignored by the metrics", stacklevel=2)
        return LabelledTexts(split.texts, [self.label_index(labels) for labels in split.labels], split.ids)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            train, carved_val = self._train_and_carved_val
            self.datasets["train"] = self._labelled(train, "train")
            if carved_val is not None:
                self.datasets["val"] = self._labelled(carved_val, "val")
        if stage in ("fit", "validate") and "val" not in self.datasets:
            if has_split(self.data_dir, hp.val_split):
                val = read_split(self.data_dir, hp.val_split, on_invalid=hp.on_invalid)
                self.datasets["val"] = self._labelled(val, "val")
            elif stage == "validate" and self._train_and_carved_val[1] is not None:
                self.datasets["val"] = self._labelled(self._train_and_carved_val[1], "val")
        if stage == "test":
            self.datasets["test"] = self._labelled(
                read_split(self.data_dir, hp.test_split, on_invalid=hp.on_invalid), "test")
        if stage == "predict":
            if hp.predict_file is None:
                raise DataFormatError("predict needs a raw text file: set --data.predict_file FILE")
            if not Path(hp.predict_file).is_file():
                raise DataFormatError(f"text file {hp.predict_file} does not exist (data.init_args.predict_file): give "
                                      "a text file with one document per line")
            self.datasets["predict"] = LabelledTexts(read_text_lines(hp.predict_file), None)

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        if name not in self.datasets:
            raise DataFormatError(f"no {name} data in {self.data_dir}")
        bs = self.hparams.batch_size if name == "train" else (self.hparams.eval_batch_size or self.hparams.batch_size)
        return DataLoader(self.datasets[name], batch_size=bs, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, collate_fn=Collate(self.num_labels),
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val") if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
