"""Streams ``predict`` output to JSONL: one line per input document, in input order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes ``{"index", "labels", "names", "scores"}`` per document.

    Each rank streams its batches to its own part file as they finish (an interrupted run keeps
    what it wrote); at the end rank 0 merges the parts in input order into ``output``.

    Args:
        output: JSONL file to write; default ``predictions.jsonl`` in the trainer's log directory.
        top_k: labels per document; default the model's ``predict_top_k``. (An inference setting lives
            here, not in the model: LightningCLI restores model arguments from the checkpoint.)
    """

    def __init__(self, output: str | None = None, top_k: int | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.top_k = top_k
        self._part: Any = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.top_k is not None:
            pl_module.predict_top_k = self.top_k

    def _path(self, trainer: L.Trainer) -> Path:
        return Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.jsonl"

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".rank{trainer.global_rank}.part")
        self._part = open(part, "w", encoding="utf-8")  # noqa: SIM115 (open across hooks, closed at epoch end)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict[str, torch.Tensor],
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        stats = pl_module.label_stats
        for i, labels, scores in zip(prediction["index"].tolist(), prediction["labels"].tolist(),
                                     prediction["scores"].tolist(), strict=True):
            row = {"index": i, "labels": [stats.label_ids[j] for j in labels],
                   "names": [stats.label_names[j] for j in labels], "scores": [round(s, 6) for s in scores]}
            self._part.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._part.flush()

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part.close()
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            path = self._path(trainer)
            parts = sorted(path.parent.glob(path.with_suffix(".rank*.part").name))
            rows: dict[int, str] = {}
            for part in parts:
                for line in part.read_text(encoding="utf-8").splitlines():
                    rows.setdefault(json.loads(line)["index"], line)  # DistributedSampler may repeat a row
            path.write_text("".join(rows[i] + "\n" for i in sorted(rows)), encoding="utf-8")
            for part in parts:
                part.unlink()
            print(f"predictions for {len(rows)} documents written to {path}")
