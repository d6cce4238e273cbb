"""The full LightningCLI config saved with the experiment-tracker run, not only in the log directory."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

WANDB_CONFIG_FILE = "xmtc_cli_config.yaml"  # not config.yaml: W&B keeps its own run config under that name


class SaveConfigToLoggers(SaveConfigCallback):
    """Besides ``config.yaml`` in the log directory, every W&B run gets the whole config: as the run config
    key ``cli`` (searchable, shown in the run overview, kept apart from the model and data hyperparameters
    Lightning logs) and as ``xmtc_cli_config.yaml`` among the run's files (uploaded by ``wandb sync``), so a
    run on the dashboard can be reproduced with ``python -m xmtc fit --config xmtc_cli_config.yaml``."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        dumped = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            run = logger.experiment
            run.config.update({"cli": yaml.safe_load(dumped)}, allow_val_change=True)
            path = Path(run.dir) / WANDB_CONFIG_FILE
            path.write_text(dumped, encoding="utf-8")
            run.save(str(path), base_path=run.dir, policy="now")
