"""``python -m xmtc fit|validate|test|predict --config FILE``: LightningCLI with the data linked to the model."""

from __future__ import annotations

from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from xmtc.callbacks.save_config import SaveConfigToLoggers
from xmtc.data.datamodule import XMTCDataModule
from xmtc.models.base import XMTCModule
from xmtc.prediction_writer import JsonlPredictionWriter
from xmtc.trainer import XMTCTrainer


class XMTCCLI(LightningCLI):
    """Label statistics and the vocabulary come from the training split, never from hand-copied numbers."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.label_stats", "model.init_args.label_stats", apply_on="instantiate")
        parser.link_arguments("data.tokenizer", "model.init_args.tokenizer", apply_on="instantiate")
        # the sizes too, so that logged and checkpointed hyperparameters show the real values
        parser.link_arguments("data.num_labels", "model.init_args.num_labels", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "attack": {"model", "datamodule"}}

    def before_predict(self) -> None:
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(JsonlPredictionWriter())


def main(args: list[str] | None = None) -> XMTCCLI:
    return XMTCCLI(
        XMTCModule,
        XMTCDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=XMTCTrainer,
        args=args,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
        },
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
