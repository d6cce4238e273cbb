"""The Lightning Trainer with xmtc's own subcommands (as methods, so LightningCLI exposes them)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L

from xmtc.attack.runner import AttackRun, AttackSettings
from xmtc.data.datamodule import XMTCDataModule
from xmtc.errors import UserError
from xmtc.model_paths import MASKED_LM, SENTENCE_ENCODER, USE_ENCODER, check_model_path
from xmtc.models.base import XMTCModule

# Lightning 2.6 builds torch's deprecated LeafSpec when it flattens batches (torch >= 2.10 warns, every run);
# nothing a user of xmtc can or need do about it.
warnings.filterwarnings("ignore", category=FutureWarning,
                        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class _NoAdvertisement(logging.Filter):
    """Drops the Trainer's tip to install litlogger (a product advertisement, printed on every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdvertisement())


def check_attack_models(settings: AttackSettings, data_dir: str | None = None) -> None:
    """Fail before any checkpoint is loaded or pair chosen when the masked LM or the encoder path is wrong."""
    check_model_path(settings.masked_lm, MASKED_LM, data=data_dir)
    if settings.encoder == "sentence-transformers" and settings.encoder_path:
        check_model_path(settings.encoder_path, SENTENCE_ENCODER)
    elif settings.encoder == "use":
        if not settings.encoder_path:
            raise UserError("settings.encoder 'use' needs settings.encoder_path: a TF-Hub handle (https://...) or a "
                            "local SavedModel folder")
        if "://" not in settings.encoder_path or settings.encoder_path.startswith("file://"):
            check_model_path(settings.encoder_path, USE_ENCODER)


def _model_name(model: XMTCModule) -> str:
    names = {"NormalLoss": "normal", "PWLoss": "pw", "PWCBLoss": "pwcb"}
    return names.get(type(model.loss).__name__, type(model.loss).__name__)


class XMTCTrainer(L.Trainer):
    def attack(
        self,
        model: XMTCModule,
        datamodule: XMTCDataModule,
        ckpt_path: str | None = None,
        compare: dict[str, str] | None = None,
        settings: AttackSettings = AttackSettings(),  # noqa: B008 (read-only; jsonargparse shows its fields)
        output_dir: str = "attacks/run",
        show_progress: bool = True,
    ) -> dict[str, Any]:
        """Targeted adversarial attacks on held-out documents, per label frequency (results.jsonl, summary).

        Args:
            ckpt_path: checkpoint of the model to attack (its loss head names it in the reports).
            compare: more checkpoints, by name (e.g. {pw: ..., pwcb: ...}); all models are attacked on the
                same pairs, those every one of them classifies correctly (paper §4.3.2).
            settings: what to attack and how.
            output_dir: where results.jsonl, summary.json, tables.md and the plots go; rerunning with the
                same arguments resumes, with other arguments it is refused.
            show_progress: progress bar.
        """
        if ckpt_path is None and not compare:
            raise UserError("attack needs --ckpt_path (and/or --compare name=path): a trained model to attack")
        paths = ({_model_name(model): ckpt_path} if ckpt_path else {}) | dict(compare or {})
        for name, path in paths.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"checkpoint of {name!r} not found: {path}; give a .ckpt file written by "
                                        "`python -m xmtc fit` (logs/<name>/<version>/checkpoints/last.ckpt)")
        check_attack_models(settings, str(datamodule.data_dir))
        models: dict[str, XMTCModule] = {}
        for name, path in paths.items():
            loaded = type(model).load_from_checkpoint(path, map_location="cpu")
            if loaded.label_stats.label_ids != datamodule.label_stats.label_ids:
                raise UserError(f"checkpoint {path} was trained on another label space than {datamodule.data_dir}: "
                                "is it from another dataset?")
            models[name] = loaded.to(self.strategy.root_device).eval()
        is_test = settings.split == datamodule.hparams.test_split
        datamodule.setup("test" if is_test else "validate")
        split = "test" if is_test else "val"
        data = datamodule.datasets[split]
        doc_ids = data.ids or [f"{settings.split}:{i}" for i in range(len(data))]
        train = (datamodule.train_split.texts, [datamodule.label_index(y) for y in datamodule.train_split.labels])
        run = AttackRun(models, data.texts, data.labels, doc_ids, settings, output_dir,
                        identity={"checkpoints": paths, "data_dir": str(datamodule.data_dir)}, train=train,
                        device=str(self.strategy.root_device))
        summary = run.run(show_progress=show_progress)
        print(f"attack results in {output_dir}: results.jsonl, summary.json, tables.md")
        return summary
