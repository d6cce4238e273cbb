"""The Lightning Trainer with xmtc's own subcommands (as methods, so LightningCLI exposes them)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L

from xmtc.attack.runner import AttackRun, AttackSettings
from xmtc.attack.targets import load_checkpoint, load_hf_classifier
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
    if settings.transformation is None:  # a transformation part was built (and checked) by the config parser
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
        model: type[XMTCModule] | XMTCModule | None = None,
        datamodule: XMTCDataModule | None = None,
        ckpt_path: str | None = None,
        compare: dict[str, str] | None = None,
        hf_model: str | None = None,
        settings: AttackSettings = AttackSettings(),  # noqa: B008 (read-only; jsonargparse shows its fields)
        output_dir: str = "attacks/run",
        show_progress: bool = True,
    ) -> dict[str, Any]:
        """Targeted adversarial attacks on held-out documents, per label frequency (results.jsonl, summary).

        Runs in this trainer's test loop: ``--trainer.devices=N --trainer.strategy=ddp`` (and ``num_nodes``)
        share the groups of pairs out over the processes, one merged results.jsonl (xmtc.attack.lightning).

        Args:
            model: the model class checkpoints are restored as when they do not name theirs (the command line
                passes the config's model.class_path; the model is never built from the config).
            ckpt_path: checkpoint of the model to attack (its loss head names it in the reports).
            compare: more checkpoints, by name (e.g. {pw: ..., pwcb: ...}); all models are attacked on the
                same pairs, those every one of them classifies correctly (paper §4.3.2).
            hf_model: a Hugging Face multilabel sequence classifier (local folder) to attack too, named after
                its folder; its labels (config.id2label) must be the dataset's label ids, in any order.
            settings: what to attack and how.
            output_dir: where results.jsonl, summary.json, tables.md and the plots go; rerunning with the
                same arguments resumes, with other arguments it is refused.
            show_progress: progress bar.
        """
        if ckpt_path is None and not compare and hf_model is None:
            raise UserError("attack needs --ckpt_path (and/or --compare name=path, --hf_model path): a trained "
                            "model to attack")
        if datamodule is None:
            raise UserError("attack needs the data (--data, or a config with data:)")
        if ckpt_path is not None and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt_path} (--ckpt_path); give a .ckpt file written by "
                                    "`python -m xmtc fit` (logs/<name>/<version>/checkpoints/last.ckpt)")
        for name, path in (compare or {}).items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"checkpoint of {name!r} not found: {path}; give a .ckpt file written by "
                                        "`python -m xmtc fit` (logs/<name>/<version>/checkpoints/last.ckpt)")
        data_dir = str(datamodule.data_dir)
        check_attack_models(settings, data_dir)
        stats = datamodule.label_stats
        model_class = model if isinstance(model, type) or model is None else type(model)
        targets: dict[str, Any] = {}
        paths: dict[str, str] = {}
        if ckpt_path is not None:
            loaded = load_checkpoint(ckpt_path, model_class, stats.label_ids, data_dir)
            name = _model_name(loaded)
            targets[name], paths[name] = loaded, ckpt_path
        for name, path in (compare or {}).items():
            targets[name], paths[name] = load_checkpoint(path, model_class, stats.label_ids, data_dir), path
        identity: dict[str, Any] = {"checkpoints": paths, "data_dir": data_dir}
        if hf_model is not None:
            name = Path(hf_model).name or "hf"
            if name in targets:
                raise UserError(f"--hf_model {hf_model}: its name {name!r} is taken by a checkpoint (--compare); "
                                "rename one of them")
            targets[name] = load_hf_classifier(hf_model, stats.label_ids, self.strategy.root_device)
            identity["hf_models"] = {name: hf_model}
        is_test = settings.split == datamodule.hparams.test_split
        datamodule.setup("test" if is_test else "validate")
        data = datamodule.datasets["test" if is_test else "val"]
        doc_ids = data.ids or [f"{settings.split}:{i}" for i in range(len(data))]
        train = (datamodule.train_split.texts, [datamodule.label_index(y) for y in datamodule.train_split.labels])
        run = AttackRun(targets, data.texts, data.labels, doc_ids, settings, output_dir, identity=identity,
                        train=train, device=str(self.strategy.root_device), stats=stats)
        summary = run.run(show_progress=show_progress, trainer=self)
        if self.is_global_zero:
            print(f"attack results in {output_dir}: results.jsonl, summary.json, tables.md")
        return summary
