"""``python -m xmtc fit|validate|test|predict|attack --config FILE``: LightningCLI with the data linked to the model.

``main`` raises what goes wrong (for Python callers and tests); ``run``, the command line entry, prints a user
error (wrong option value, path or data file) as ``error: ...`` and exits with status 2, without the traceback
(``XMTC_TRACEBACK=1`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from xmtc.callbacks.save_config import SaveConfigToLoggers
from xmtc.data.datamodule import XMTCDataModule
from xmtc.errors import UserError, exit_on_user_error, show_tracebacks
from xmtc.models.base import XMTCModule
from xmtc.prediction_writer import JsonlPredictionWriter
from xmtc.trainer import XMTCTrainer

PROG = "python -m xmtc"
# What the attack subcommand uses of the Trainer: the devices and how the work is shared over them (models are
# loaded from checkpoints and run in float32; nothing is trained, logged or checkpointed).
ATTACK_TRAINER_OPTIONS = {"trainer.accelerator", "trainer.strategy", "trainer.devices", "trainer.num_nodes"}
# ckpt_path values Lightning resolves itself (fit resumes from them)
_CKPT_KEYWORDS = {"last", "best", "hpc", "registry"}

_UNION_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value type:|"
    r"Expected a <class 'NoneType'>$|Expected a path but .* either not accessible or invalid$)")


def condense_parser_message(message: str) -> str:
    """jsonargparse's message for a bad option (a tree of union alternatives, often 10-20 lines) as one line:
    the option as given on the command line and what is wrong with it."""
    parts: list[str] = []
    details: list[str] = []
    class_path: str | None = None
    after_class = False
    given = None
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if key := re.match(r'Parser key "([^"]+)":\s*(.*)$', line):
            parts += ["init_args", key[1]] if parts and after_class else [key[1]]
            after_class = False
            if key[2]:
                details.append(key[2])
        elif cls := re.match(r"Problem with given class_path '([^']+)'", line):
            class_path, after_class = cls[1], True
        elif line.startswith("Given value:"):
            given = given or line.removeprefix("Given value:").strip()
        elif line and not _UNION_NOISE.match(line) and line not in details:
            details.append(line)
    text = "; ".join(details) or message.strip().splitlines()[0]
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text).replace("Expected a ", "expected ")
    text = re.sub(r"typing\.Literal\[(.*?)\]", r"one of \1", text)
    text = re.sub(r"\. Got value: (.*)$", lambda m: f" (got {m[1]!r})", text)
    if after_class and class_path and class_path not in text:
        text += f" ({class_path})"
    if given and "(got " not in text and given not in text and not given.startswith("NestedArg("):
        text += f" (got {given!r})"
    text = f"--{'.'.join(parts)}: {text}" if parts else text
    return text if len(text) <= 500 else text[:497] + "..."


class XMTCArgumentParser(LightningArgumentParser):
    """No abbreviated options (``--trainer.max_epoch`` is an error, not ``max_epochs``), and a bad option is
    reported in two lines instead of the whole usage and jsonargparse's tree of union alternatives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or show_tracebacks() or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # raises (Python callers, debugging) or prints jsonargparse's full message
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {condense_parser_message(message)}\n"
                         f"       (`{prog} --help` lists the options; XMTC_TRACEBACK=1 shows the full message)\n")
        self.exit(2)


class XMTCCLI(LightningCLI):
    """Label statistics and the vocabulary come from the training split, never from hand-copied numbers."""

    _preparing: str | None = None  # the subcommand whose parser is being built

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        self._preparing = subcommand
        try:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        finally:
            self._preparing = None

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``attack`` reads the model section of a config (the class checkpoints are restored as) without
        building the model, and needs none to attack a Hugging Face classifier (--hf_model)."""
        if self._preparing != "attack":
            return super().add_core_arguments_to_parser(parser)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model,
                                        required=False)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if self._preparing == "attack":  # the model is not built: nothing to link (and no vocabulary to build)
            return
        parser.link_arguments("data.label_stats", "model.init_args.label_stats", apply_on="instantiate")
        parser.link_arguments("data.tokenizer", "model.init_args.tokenizer", apply_on="instantiate")
        # the sizes too, so that logged and checkpointed hyperparameters show the real values
        parser.link_arguments("data.num_labels", "model.init_args.num_labels", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "attack": {"model", "datamodule"}}

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        attack = getattr(self, "_subcommand_parsers", {}).get("attack")
        if attack is not None:  # still accepted (a training config is reused), only left out of --help
            for action in attack._actions:
                if action.dest.startswith("trainer.") and action.dest not in ATTACK_TRAINER_OPTIONS:
                    action.help = argparse.SUPPRESS
            for group in attack._action_groups:
                if any(a.dest == "trainer.accelerator" for a in group._group_actions):
                    group.title = ("The devices the attack runs on; with strategy ddp the pairs are shared out "
                                   "over devices x num_nodes processes (the trainer's other options, from a "
                                   "training config, are accepted and not used)")

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the checkpoint's hyperparameters first: a file that is no checkpoint is a user error."""
        try:
            super()._parse_ckpt_path()
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
            ckpt = self.config[self.config.subcommand].get("ckpt_path")
            raise UserError(f"{ckpt} (--ckpt_path) cannot be read as a checkpoint ({type(e).__name__}); give a .ckpt "
                            "file written by `python -m xmtc fit`") from e

    def before_instantiate_classes(self) -> None:
        """A wrong checkpoint path fails now, not after the data are read (Lightning checks it last)."""
        sub = self.config.get("subcommand")
        if sub is None:
            return
        ckpt = self.config[sub].get("ckpt_path")
        if ckpt and str(ckpt).split(":")[0] not in _CKPT_KEYWORDS and not Path(ckpt).is_file():
            state = "is a folder" if Path(ckpt).is_dir() else "not found"
            raise FileNotFoundError(f"checkpoint {state}: {ckpt} (--ckpt_path); give a .ckpt file written by "
                                    "`python -m xmtc fit` (logs/<name>/<version>/checkpoints/last.ckpt)")

    def instantiate_classes(self) -> None:
        """A ValueError raised while the model, data or trainer is built from the config is a bad option value
        (the classes check their arguments): reported as a user error, not as a traceback through jsonargparse.

        ``attack`` builds no model: it gets the config's model class (checkpoints that do not name their class
        are restored as it), so an APLC-XLNet config loads no XLNet only to throw it away."""
        try:
            if self.subcommand == "attack":
                self._instantiate_without_model()
            else:
                super().instantiate_classes()
        except Exception as exc:
            wrapper, cause = exc, exc.__cause__
            while cause is not None and cause.__cause__ is not None:
                wrapper, cause = cause, cause.__cause__
            if cause is not None and type(cause) is ValueError:
                built = re.search(r"class_path='([\w.]+)'", str(wrapper))  # the class whose init refused
                raise UserError((f"{built[1]}: " if built else "") + str(cause)) from exc
            raise

    def _instantiate_without_model(self) -> None:
        config = self.config["attack"]
        model_config = config.get("model")
        config["model"] = None
        try:
            self.config_init = self.parser.instantiate_classes(self.config)
        finally:
            config["model"] = model_config
        self.datamodule = self._get(self.config_init, "data")
        self.model = _model_class(model_config)
        self.trainer = self.instantiate_trainer()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """For ``attack``: the device options only (a training config's callbacks, logger and epochs are accepted
        and not used), and the attack's own defaults (``xmtc.attack.lightning.ATTACK_TRAINER_DEFAULTS``)."""
        if self.subcommand != "attack":
            return super().instantiate_trainer(**kwargs)
        from xmtc.attack.lightning import ATTACK_TRAINER_DEFAULTS

        config = self._get(self.config_init, "trainer", default={})
        devices = {k.removeprefix("trainer."): config[k.removeprefix("trainer.")] for k in ATTACK_TRAINER_OPTIONS}
        return self.trainer_class(**devices, **ATTACK_TRAINER_DEFAULTS, **kwargs)

    def before_predict(self) -> None:
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(JsonlPredictionWriter())

    # validate/test/predict restore the config's ModelCheckpoint callbacks from the checkpoint, into a new log
    # directory: Lightning's note that their dirpath changed concerns resuming a fit, not these.
    def _evaluate(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            return method(**kwargs)

    def validate(self, **kwargs: Any) -> Any:
        return self._evaluate(self.trainer.validate, **kwargs)

    def test(self, **kwargs: Any) -> Any:
        return self._evaluate(self.trainer.test, **kwargs)

    def predict(self, **kwargs: Any) -> Any:
        return self._evaluate(self.trainer.predict, **kwargs)


def _model_class(model_config: Any) -> type | None:
    """The class a parsed ``model`` section names (None when there is none)."""
    class_path = None if model_config is None else model_config.get("class_path")
    if not class_path:
        return None
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def main(args: list[str] | None = None) -> XMTCCLI:
    """Run the CLI; errors are raised (see ``run`` for the command line's short messages)."""
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
        parser_class=XMTCArgumentParser,
        parser_kwargs={"prog": PROG, "description": "xmtc: extreme multilabel text classification and attacks on it"},
    )


def run(args: list[str] | None = None) -> int:
    """The command line entry: exit status 0, or 2 after ``error: ...`` for a user error."""
    return exit_on_user_error(main, args)
