"""Wall time of every training epoch, logged like any metric, so that runs can be compared for cost.

Lightning's ``Timer`` callback keeps the total per stage only; comparing what a callback such as
``AdversarialTraining`` adds to an epoch needs the time of each epoch, and without the validation that runs
inside it (validation costs every run alike and would hide the difference).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class EpochTimer(Callback):
    """Logs ``time/train_epoch_seconds`` (training steps only) and ``time/epoch_seconds`` (with the validation
    that ran inside the epoch) at the end of every training epoch, through the trainer's loggers."""

    def __init__(self) -> None:
        self._began: float | None = None
        self._validation = 0.0
        self._val_began: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._began, self._validation = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_began = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the sanity check runs before the first epoch starts: only time validation inside an epoch
        if self._val_began is not None and self._began is not None and not trainer.sanity_checking:
            self._validation += time.perf_counter() - self._val_began
        self._val_began = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._began is None:
            return
        total = time.perf_counter() - self._began
        pl_module.log_dict({"time/epoch_seconds": total, "time/train_epoch_seconds": total - self._validation},
                           on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)
        self._began = None

    def state_dict(self) -> dict[str, Any]:
        return {}
