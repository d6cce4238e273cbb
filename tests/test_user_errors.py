"""What a user sees when they get something wrong, and that a run prints nothing that is not their business.

Every error a user can cause is one or two lines (``error: ...``, exit status 2, no traceback, no dump of the
label space); model paths that look local never go to the network; a run that failed before its first result
does not lock its output directory; ``python -m xmtc`` parses strictly and shows only options that apply.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import DEMO, REPO, write_axml

from xmtc.attack.runner import AttackRun, AttackSettings
from xmtc.cli import ATTACK_TRAINER_OPTIONS, condense_parser_message, main, run
from xmtc.data.label_stats import LabelStats
from xmtc.data.readers import DataFormatError
from xmtc.errors import ModelPathError, UserError, exit_on_user_error
from xmtc.model_paths import MASKED_LM, check_model_path, looks_local

CONFIG = str(REPO / "configs" / "demo_axml.yaml")
TINY = ["--model.init_args.embedding_dim=8", "--model.init_args.hidden_size=4", "--model.init_args.linear_sizes=[4]",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# what every run printed before, none of it the user's business
NOISE = ("overridden `on_before_batch_transfer`", "overridden `transfer_batch_to_device`", "litlogger",
         "LeafSpec", "Attribute 'loss' is an instance", "The dirpath has changed", "Loading weights", "Traceback")


def _error_lines(err: str) -> list[str]:
    """stderr from the first ``error:`` line on (Lightning's "Seed set to 0" and the like come before)."""
    lines = err.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert starts, err[-2000:]
    return lines[starts[0]:]


# --- a short fit and test, as a user runs them


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path, str]:
    """``python -m xmtc fit`` then ``test`` in subprocesses (their real stderr); the data, checkpoint and stderr."""
    root = tmp_path_factory.mktemp("user_errors")
    data = write_axml(root / "toy", {"train": 120, "test": 30})
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # show each warning, as a user's terminal does
    common = [f"--config={CONFIG}", f"--data.init_args.data_dir={data}", f"--trainer.logger.init_args.save_dir={root}",
              *TINY]
    fit = subprocess.run([sys.executable, "-m", "xmtc", "fit", *common, "--trainer.max_epochs=1",
                          "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
                          "--trainer.log_every_n_steps=1"], capture_output=True, text=True, env=env, cwd=root)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = next(root.rglob("last.ckpt"))
    test = subprocess.run([sys.executable, "-m", "xmtc", "test", *common, f"--ckpt_path={ckpt}"],
                          capture_output=True, text=True, env=env, cwd=root)
    assert test.returncode == 0, test.stderr[-3000:]
    return data, ckpt, fit.stderr + test.stderr


def test_a_short_fit_and_test_print_no_library_noise(fitted):
    _, _, err = fitted
    for noise in NOISE:
        assert noise not in err, f"{noise!r} in:\n{err}"


def test_user_error_from_the_command_line_is_one_line_and_status_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "xmtc", "fit", f"--config={CONFIG}",
                             f"--data.init_args.data_dir={tmp_path / 'nowhere'}"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "nowhere does not exist (data.init_args.data_dir)" in lines[0]


# --- bad paths


def test_wrong_word_vectors_path_is_one_line_without_the_label_space(tmp_path, capsys):
    status = run(["fit", f"--config={CONFIG}", f"--data.init_args.data_dir={DEMO}",
                  "--model.init_args.word_vectors=nope.txt", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 2
    lines = _error_lines(err)
    assert len(lines) == 1 and len(lines[0]) < 300, err[:3000]  # was 74 lines, 64 KB: every label id and name
    assert "word vector file not found: nope.txt (model.init_args.word_vectors)" in lines[0]
    assert "label_ids" not in err and "Union subtypes" not in err


def test_missing_checkpoint_fails_before_the_data_are_read(fitted, tmp_path, capsys, monkeypatch):
    data, _, _ = fitted

    def no_reading(*args, **kwargs):
        raise AssertionError("the data were read before the checkpoint path was checked")

    monkeypatch.setattr("xmtc.data.datamodule.read_split", no_reading)
    for ckpt, says in ((tmp_path / "nope.ckpt", "checkpoint not found"), (tmp_path, "checkpoint is a folder")):
        status = run(["test", f"--config={CONFIG}", f"--data.init_args.data_dir={data}", f"--ckpt_path={ckpt}"])
        lines = _error_lines(capsys.readouterr().err)
        assert status == 2 and len(lines) == 1 and says in lines[0] and "--ckpt_path" in lines[0]
    (tmp_path / "garbage.ckpt").write_text("not a checkpoint")
    status = run(["test", f"--config={CONFIG}", f"--data.init_args.data_dir={data}",
                  f"--ckpt_path={tmp_path / 'garbage.ckpt'}"])
    assert status == 2 and "cannot be read as a checkpoint" in _error_lines(capsys.readouterr().err)[0]


def test_attack_with_a_missing_masked_lm_stops_before_any_work(fitted, tmp_path, capsys):
    data, ckpt, _ = fitted
    out = tmp_path / "attack"
    began = time.perf_counter()
    status = run(["attack", f"--config={CONFIG}", f"--config={REPO / 'configs' / 'attack_demo.yaml'}",
                  f"--data.init_args.data_dir={data}", f"--ckpt_path={ckpt}", f"--output_dir={out}",
                  f"--settings.masked_lm={tmp_path / 'models' / 'mlm-missing'}", "--show_progress=false"])
    lines = _error_lines(capsys.readouterr().err)
    assert status == 2 and time.perf_counter() - began < 20
    assert len(lines) == 1 and "masked language model folder not found" in lines[0]
    assert f"python -m xmtc.attack.mlm --data {data} --output {tmp_path / 'models' / 'mlm-missing'}" in lines[0]
    assert not out.exists()  # nothing written, so nothing locked


# --- bad option values, strict parsing


@pytest.mark.parametrize(("option", "says"), [
    ("--trainer.max_epochs=abc", "--trainer.max_epochs: expected int (got 'abc')"),
    ("--model.init_args.hidden_size=abc", "--model.init_args.hidden_size: expected int (got 'abc')"),
    ("--data.init_args.on_invalid=foo", "--data.init_args.on_invalid: expected one of 'error', 'skip' (got 'foo')"),
    ("--model.init_args.hiden_size=3", "--model: Option 'hiden_size' is not accepted (xmtc.models.AttentionXML)"),
    ("--trainer.max_epoch=2", "unrecognized arguments: --trainer.max_epoch=2"),  # no prefix matching
])
def test_bad_option_value_is_two_lines(option, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={CONFIG}", option, "--print_config"])
    assert exit_info.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 2 and lines[0] == f"error: {says}", lines
    assert "python -m xmtc fit --help" in lines[1]


def test_value_refused_by_a_class_names_the_class(tmp_path, capsys):
    data = write_axml(tmp_path / "toy", {"train": 30, "test": 10})
    status = run(["fit", f"--config={CONFIG}", f"--data.init_args.data_dir={data}",
                  "--model.init_args.loss=xmtc.losses.PWCBLoss", "--model.init_args.loss.init_args.beta=2"])
    lines = _error_lines(capsys.readouterr().err)
    assert status == 2 and lines == ["error: xmtc.losses.PWCBLoss: beta must be in [0, 1), got 2.0"]


def test_condensed_message_keeps_the_option_and_the_reason():
    message = ('Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: [...]\n'
               "  Errors:\n    - Problem with given class_path 'xmtc.models.AttentionXML':\n"
               '        Parser key "loss":\n          Does not validate against any of the Union subtypes\n'
               "          Errors:\n            - Problem with given class_path 'xmtc.losses.NormalLoss':\n"
               "                Option 'beta' is not accepted\n            - Expected a <class 'NoneType'>\n"
               "          Given value: NestedArg(key='beta', val='2')\n    - Expected a <class 'NoneType'>\n")
    assert condense_parser_message(message) == ("--model.init_args.loss: Option 'beta' is not accepted "
                                                 "(xmtc.losses.NormalLoss)")
    assert condense_parser_message("unrecognized arguments: --x 1") == "unrecognized arguments: --x 1"


def test_usage_names_python_m_xmtc(capsys):
    for args, usage in ((["--help"], "usage: python -m xmtc [-c CONFIG]"),
                        (["fit", "--help"], "usage: python -m xmtc [options] fit")):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code in (0, None)
        out = capsys.readouterr().out
        assert out.startswith(usage) and "__main__.py" not in out


def test_attack_help_lists_only_the_device_options_yet_accepts_a_training_config(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    out = capsys.readouterr().out
    shown = set(re.findall(r"--trainer\.[\w+]+", out))
    assert shown == {f"--{o}" for o in ATTACK_TRAINER_OPTIONS} | {"--trainer.devices+"}
    with pytest.raises(SystemExit) as exit_info:  # the demo config's max_epochs, callbacks, logger: still accepted
        main(["attack", f"--config={CONFIG}", "--trainer.max_epochs=3", "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "trainer:\n  accelerator: auto\n  strategy: auto\n  devices: 1\n  num_nodes: 1\n" in capsys.readouterr().out


# --- what counts as a user error


def test_programming_errors_keep_their_traceback(monkeypatch, capsys):
    def raises(exc: BaseException):
        def fn() -> None:
            raise exc
        return fn

    for bug in (KeyError("x"), AttributeError("y"), ValueError("z"), TypeError("w")):
        with pytest.raises(type(bug)):
            exit_on_user_error(raises(bug))
    wrapped = ValueError("Does not validate against any of the Union subtypes")
    wrapped.__cause__ = DataFormatError("empty document", "train_raw_texts.txt", 3)
    assert exit_on_user_error(raises(wrapped)) == 2
    assert capsys.readouterr().err == "error: train_raw_texts.txt:3: empty document\n"
    assert exit_on_user_error(raises(UserError("wrong"))) == 2
    monkeypatch.setenv("XMTC_TRACEBACK", "1")
    with pytest.raises(UserError):
        exit_on_user_error(raises(UserError("wrong")))


# --- model paths: local or hub


@pytest.mark.parametrize(("name", "local"), [
    ("bert-base-cased", False), ("google-bert/bert-base-cased", False), ("models/mlm-eurlex57k-demo", True),
    ("./mlm", True), ("../mlm", True), ("/abs/mlm", True), ("~/mlm", True), ("a/b/c", True), ("tests/missing", True),
    ("file:///x/mlm", True), ("spaces/x", True), ("datasets/x", True),
])
def test_local_path_rule(name, local):
    assert looks_local(name) is local


@pytest.fixture
def online_but_no_network(monkeypatch) -> list[tuple]:
    """Downloads allowed (as on a user's machine), every name lookup recorded and refused."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    lookups: list[tuple] = []

    def refuse(*args, **kwargs):
        lookups.append(args)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return lookups


def _load_masked_lm(path: str) -> None:
    from xmtc.attack.transformation import MaskedLMSubstitution

    MaskedLMSubstitution(path)


def _load_sentence_encoder(path: str) -> None:
    pytest.importorskip("sentence_transformers")
    from xmtc.attack.similarity import SentenceTransformerEncoder

    SentenceTransformerEncoder(path)


def _load_use(path: str) -> None:
    from xmtc.attack.similarity import UniversalSentenceEncoder

    UniversalSentenceEncoder(path)


def _load_xlnet(path: str) -> None:
    from xmtc.models.aplc import build_xlnet

    build_xlnet(path, None, None, None)


def _load_tokenizer(path: str) -> None:
    from xmtc.data.subword import load_subword_tokenizer

    load_subword_tokenizer(path, data_dir="data/mine")


@pytest.mark.parametrize(("load", "says"), [
    (_load_masked_lm, "python -m xmtc.attack.mlm --data DATA_DIR --output models/missing-model"),
    (_load_sentence_encoder, "sentence-transformers model folder not found"),
    (_load_use, "Universal Sentence Encoder SavedModel folder not found"),
    (_load_xlnet, "hf download xlnet/xlnet-base-cased --local-dir models/missing-model"),
    (_load_tokenizer, "python -m xmtc.data.train_tokenizer --data data/mine --output models/missing-model"),
])
def test_missing_local_model_fails_at_once_without_network(load, says, online_but_no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # models/ does not exist here: the rule, not the folder, makes it local
    began = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="models/missing-model") as info:
        load("models/missing-model")
    assert time.perf_counter() - began < 5  # the hub's retries took 61 s
    assert says in str(info.value)
    assert online_but_no_network == []


def test_offline_a_hub_name_not_in_the_cache_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelPathError, match="downloads are off") as info:
        check_model_path("xmtc-tests/no-such-model", MASKED_LM)
    assert "hf download xmtc-tests/no-such-model" in str(info.value)


# --- a failed attack run does not lock its directory


class _WordScorer:
    """Label l scores high when its word is in the text; a model the attack suite can use."""

    words = ["alpha", "beta", "gamma"]

    def __init__(self) -> None:
        self.label_stats = LabelStats(["a", "b", "c"], ["alpha", "beta", "gamma"], np.array([30, 20, 10]), 40,
                                      0.55, 1.5)

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64, labels: Sequence[int] | None = None,
                    logits: bool = False) -> torch.Tensor:
        z = torch.tensor([[4.0 * text.split().count(w) - 2.0 for w in self.words] for text in texts])
        z = z if labels is None else z[:, list(labels)]
        return z if logits else torch.sigmoid(z)


def test_a_run_that_failed_before_its_first_result_does_not_lock_the_directory(tmp_path, tiny_attack_models):
    mlm, _ = tiny_attack_models
    texts = [f"the council {w} the market river stone" for w in ["alpha", "beta", "gamma"] * 4]
    labels = [np.array([i % 3]) for i in range(12)]
    ids = [f"d{i}" for i in range(12)]
    out = tmp_path / "run"

    def attack(**settings) -> AttackRun:
        s = AttackSettings(**{"k": 1, "candidates": 4, "encoder": None, "min_labels_per_bin": 1,
                              "samples_per_bin": 1, "negative_clusters": False, "batch_size": 8, **settings})
        return AttackRun({"normal": _WordScorer()}, texts, labels, ids, s, out)

    with pytest.raises(ModelPathError):
        attack(masked_lm=str(tmp_path / "typo")).run(show_progress=False)
    assert (out / "run.json").exists()
    attack(masked_lm=str(mlm)).run(show_progress=False)  # the corrected rerun is accepted
    rows = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert rows and json.loads((out / "run.json").read_text())["settings"]["masked_lm"] == str(mlm)
    with pytest.raises(UserError, match="holds a run with other arguments .*candidates"):  # results exist now
        attack(masked_lm=str(mlm), candidates=3).run(show_progress=False)


def test_masked_lm_builder_reports_a_missing_data_dir_in_one_line(tmp_path, capsys):
    from xmtc.attack.mlm import main as build_mlm

    status = exit_on_user_error(build_mlm, ["--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "mlm")])
    assert status == 2 and _error_lines(capsys.readouterr().err) == [f"error: data directory {tmp_path / 'nowhere'} "
                                                                     "does not exist"]
