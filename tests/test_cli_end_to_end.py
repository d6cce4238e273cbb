"""The CLI as a user runs it: fit, validate, test, predict, checkpoint restore, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from toydata import REPO, toy_corpus, write_axml

from xmtc.cli import main
from xmtc.data.readers import DataFormatError
from xmtc.losses import NormalLoss
from xmtc.models import AttentionXML

TINY_MODEL = [
    "--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16", "--model.init_args.linear_sizes=[16]",
    "--model.init_args.dropout=0.0", "--model.init_args.embedding_dropout=0.0",
    "--model.init_args.optimizer.init_args.lr=0.02",
]


def _args(sub: str, data_dir: Path, log_dir: Path, *extra: str) -> list[str]:
    return [sub, f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data_dir}",
            f"--trainer.logger.init_args.save_dir={log_dir}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    data = write_axml(root / "toy", {"train": 240, "test": 60})
    main(_args("fit", data, root / "logs", "--trainer.max_epochs=6", *TINY_MODEL))
    ckpt = next((root / "logs").rglob("last.ckpt"))
    return data, root / "logs", ckpt


def test_fit_learns_the_toy_task_and_logs_metrics(trained):
    _, logs, _ = trained
    with open(next(logs.rglob("metrics.csv")), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/P@1")]
    assert len(val) == 6
    assert float(val[-1]["val/P@1"]) > 0.9
    for key in ("val/P@3", "val/nDCG@5", "val/PSP@5", "val/PSnDCG@5", "val/P@5/freq_0-5", "val/P@5/freq_501+"):
        assert key in rows[0]


def test_test_subcommand_reports_all_metrics(trained, tmp_path):
    data, _, ckpt = trained
    cli = main(_args("test", data, tmp_path, f"--ckpt_path={ckpt}", *TINY_MODEL))
    metrics = cli.trainer.callback_metrics
    assert metrics["test/P@1"] > 0.9
    assert {"test/P@5", "test/nDCG@5", "test/PSP@1", "test/PSnDCG@3"} <= set(metrics)


def test_predict_writes_jsonl_in_input_order(trained, tmp_path):
    data, _, ckpt = trained
    texts = ["milk cheese butter cows", "fishing vessels catch quota", "rail train freight track tax customs"]
    doc = tmp_path / "docs.txt"
    doc.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    main(_args("predict", data, tmp_path, f"--ckpt_path={ckpt}", f"--data.init_args.predict_file={doc}",
               "--trainer.callbacks+=xmtc.prediction_writer.JsonlPredictionWriter",
               f"--trainer.callbacks.output={out}", "--trainer.callbacks.top_k=3", *TINY_MODEL))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[0]["labels"][0] == "dairy" and rows[0]["names"][0] == "Dairy (EuroVoc)"
    assert rows[1]["labels"][0] == "fishery"
    assert set(rows[2]["labels"][:2]) == {"transport", "taxation"}
    assert rows[0]["scores"] == sorted(rows[0]["scores"], reverse=True)
    assert all(len(r["labels"]) == 3 for r in rows)  # the writer's top_k, not the checkpoint's default


def test_checkpoint_alone_scores_raw_text(trained):
    data, _, ckpt = trained
    model = AttentionXML.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.tokenizer is not None and model.label_stats is not None
    texts, _ = toy_corpus(5, seed=9)
    scores = model.score_texts(texts, batch_size=2)
    assert scores.shape == (5, 5)
    assert torch.all((scores >= 0) & (scores <= 1))
    assert torch.allclose(scores, model.score_texts(texts, batch_size=5), atol=1e-6)  # batching does not matter
    assert isinstance(model.loss, NormalLoss) and model.loss.pos_weight.shape == (5,)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert saved["loss"]["class_path"] == "xmtc.losses.NormalLoss"  # config, not a pickled object


def test_checkpoint_of_another_dataset_is_refused(trained, tmp_path):
    _, _, ckpt = trained
    other = write_axml(tmp_path / "other", {"train": 30, "test": 10}, seed=5)
    (other / "train_labels.txt").write_text("x\n" * 30, encoding="utf-8")
    with pytest.raises((ValueError, RuntimeError), match="another dataset"):
        main(_args("validate", other, tmp_path, f"--ckpt_path={ckpt}", *TINY_MODEL))


def test_unknown_config_key_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(_args("fit", REPO / "data" / "eurlex57k-demo", tmp_path, "--model.init_args.hiden_size=3"))
    assert "hiden_size" in capsys.readouterr().err


def test_missing_data_directory_is_named(tmp_path):
    with pytest.raises(DataFormatError, match="nowhere"):
        main(_args("fit", tmp_path / "nowhere", tmp_path))


def test_mismatched_text_and_label_files_are_named(tmp_path):
    data = write_axml(tmp_path / "bad", {"train": 20})
    (data / "train_labels.txt").write_text("fishery\n" * 19, encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"train_raw_texts.txt has 20 lines but .*train_labels.txt has 19"):
        main(_args("fit", data, tmp_path))


def test_print_config_of_every_shipped_config(capsys):
    for config in sorted((REPO / "configs").glob("*.yaml")):
        if config.name.startswith("attack_"):
            continue  # attack settings only; tested with a model config in test_attack_cli.py
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", f"--config={config}", "--print_config"])
        assert exit_info.value.code in (0, None), config
        assert "class_path: xmtc.models" in capsys.readouterr().out, config


def test_wandb_offline_run_holds_metrics_and_config(tmp_path):
    import wandb
    from wandb_records import config, history

    data = write_axml(tmp_path / "toy", {"train": 120, "test": 30})
    main(["fit", f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}",
          "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
          "--trainer.logger=lightning.pytorch.loggers.WandbLogger", "--trainer.logger.init_args.offline=true",
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.project=xmtc-test",
          *TINY_MODEL])
    wandb.finish()  # a CLI process finishes the run at exit; in-process we do it by hand
    run_file = next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    rows = [r for r in history(run_file) if "val/P@1" in r]
    assert len(rows) == 2 and rows[-1]["trainer/global_step"] > rows[0]["trainer/global_step"]
    assert {"val/nDCG@5", "val/PSP@5", "val/P@5/freq_0-5"} <= set(rows[-1])
    cfg = config(run_file)
    assert cfg["hidden_size"] == 16 and cfg["data_dir"] == str(data) and cfg["num_labels"] == 5
    files = run_file.parent / "files"  # the CLI config under a name of its own, W&B's config.yaml left to W&B
    assert "class_path: xmtc.models.AttentionXML" in (files / "xmtc_cli_config.yaml").read_text(encoding="utf-8")
    assert not (files / "config.yaml").exists() or "class_path:" not in (files / "config.yaml").read_text()


def test_callback_snippets_append_to_any_config(capsys):
    args = ["fit", f"--config={REPO / 'configs' / 'demo_axml.yaml'}"]
    for snippet in sorted((REPO / "callbacks").glob("*.yaml")):
        args.append(f"--trainer.callbacks+={snippet}")
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    out = capsys.readouterr().out
    for name in ("StochasticWeightAveraging", "EarlyStopping", "JsonlPredictionWriter"):
        assert f"class_path: lightning.pytorch.callbacks.{name}" in out or f"xmtc.prediction_writer.{name}" in out
