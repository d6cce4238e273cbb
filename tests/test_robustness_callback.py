"""The robustness callback inside ``fit``, for real: a tiny AttentionXML, a tiny masked LM and encoder, an offline
W&B run read back from its files, and a 2-process gloo DDP fit compared with a single-process run."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import single_thread
from toydata import REPO, write_axml

from xmtc.attack.report import wilson_interval
from xmtc.attack.selection import FrequencyBin, spread_over_targets
from xmtc.callbacks.robustness import SUMMARY_COLUMNS, RobustnessCallback, merge_bins, training_state_preserved
from xmtc.cli import main

# dropout on, so a callback that drew random numbers or left the model in eval mode would change the weights
TINY_MODEL = [
    "--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16", "--model.init_args.linear_sizes=[16]",
    "--model.init_args.dropout=0.2", "--model.init_args.embedding_dropout=0.2",
    "--model.init_args.optimizer.init_args.lr=0.02",
]
K = 2


def _fit_args(data: Path, logs: Path) -> list[str]:
    return [f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}",
            "--data.init_args.val_fraction=0.2", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.name=toy", *TINY_MODEL]


def _wandb(logs: Path) -> list[str]:
    """The shipped offline W&B logger snippet, appended to the CSV logger."""
    return [f"--trainer.logger+={REPO / 'loggers' / 'wandb_offline.yaml'}",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.project=xmtc-test"]


def _callback(mlm: Path, encoder: Path, *extra: str) -> list[str]:
    """The shipped snippet, sized down to the toy task."""
    return [f"--trainer.callbacks+={REPO / 'callbacks' / 'robustness.yaml'}",
            f"--trainer.callbacks.settings.masked_lm={mlm}", f"--trainer.callbacks.settings.encoder_path={encoder}",
            f"--trainer.callbacks.settings.k={K}", "--trainer.callbacks.settings.min_labels_per_bin=2",
            "--trainer.callbacks.settings.samples_per_bin=3", "--trainer.callbacks.settings.candidates=8",
            "--trainer.callbacks.settings.max_change_rate=0.3", "--trainer.callbacks.settings.batch_size=16",
            "--trainer.callbacks.settings.documents_at_once=4", "--trainer.callbacks.max_bins=2", *extra]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_training_state_preserved_restores_modes_and_random_states():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    model[0].eval()  # a submodule frozen in eval mode stays so

    def draw() -> tuple:
        return random.random(), float(np.random.rand()), torch.rand(2).tolist()

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = draw()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with training_state_preserved(model):
        assert not model.training and not model[1].training and not torch.is_grad_enabled()
        draw(), torch.nn.Linear(50, 50), model.train()  # random numbers drawn, modes changed
    assert draw() == expected
    assert model.training and not model[0].training and model[1].training and torch.is_grad_enabled()


def test_bins_merge_to_the_budget_and_samples_spread_over_labels():
    bins = [FrequencyBin(1, 2), FrequencyBin(3, 5), FrequencyBin(6, 9), FrequencyBin(10, 40), FrequencyBin(41, 99)]
    assert merge_bins(bins, 2) == [FrequencyBin(1, 9), FrequencyBin(10, 99)]
    assert merge_bins(bins, None) == bins and merge_bins(bins, 9) == bins
    pairs = np.array([[d, t] for t in (7, 8, 9) for d in range(5)])  # 5 documents for each of 3 targets
    spread = spread_over_targets(pairs, np.random.default_rng(0))
    assert sorted(spread[:3, 1].tolist()) == [7, 8, 9] and sorted(map(tuple, spread)) == sorted(map(tuple, pairs))


def test_summary_csv_appends_under_its_own_header(tmp_path):
    """A summary.csv begun by an older xmtc (no interval columns) gets its new rows under its own header, with a
    warning naming the file; a new one gets every column."""
    cb = RobustnessCallback()
    record = {"global_step": 5, "epoch": 0, "kind": "positive", "bin": "1-5", "freq_low": 1, "freq_high": 5,
              "successes": 1, "successes_change_budget": 1, "successes_strict": 0, "attacked": 2,
              "success_rate": 0.5, "success_rate_lo": 0.1, "success_rate_hi": 0.9, "success_rate_change_budget": 0.5,
              "success_rate_change_budget_lo": 0.1, "success_rate_change_budget_hi": 0.9, "success_rate_strict": 0.0,
              "success_rate_strict_lo": 0.0, "success_rate_strict_hi": 0.66, "mean_similarity": 0.9,
              "mean_change_rate": 0.05, "mean_queries": 10.0}
    assert set(record) == set(SUMMARY_COLUMNS)
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    cb._write_files(fresh, [], [record])
    cb._write_files(fresh, [], [{**record, "global_step": 9}])
    assert [r["global_step"] for r in _csv(fresh / "summary.csv")] == ["5", "9"]
    assert _csv(fresh / "summary.csv")[0]["success_rate_strict_hi"] == "0.66"
    old.mkdir()
    before = ["global_step", "epoch", "kind", "bin", "freq_low", "freq_high", "successes", "attacked", "success_rate",
              "success_rate_change_budget", "success_rate_strict", "mean_similarity", "mean_change_rate",
              "mean_queries"]  # the columns before the intervals
    (old / "summary.csv").write_text(",".join(before) + "\n" + ",".join(["1"] * len(before)) + "\n")
    with pytest.warns(UserWarning, match="summary.csv was started without the columns successes_change_budget, "
                                         "successes_strict, success_rate_lo"):
        cb._write_files(old, [], [record])
    assert _csv(old / "summary.csv")[-1] == {k: str(record[k]) for k in before}


def test_show_robustness_prints_intervals_for_new_and_old_files(tmp_path, capsys):
    """scripts/show_robustness.py (the demo's closing table): Wilson intervals from the file's bounds, or from its
    rates and n for a file written before them."""
    from toydata import load_script

    show = load_script("show_robustness")
    lo1, hi1 = wilson_interval(3, 4)
    lo2, hi2 = wilson_interval(1, 4)
    new = {"global_step": 7, "epoch": 0, "kind": "positive", "bin": "2-9", "freq_low": 2, "freq_high": 9,
           "successes": 3, "successes_change_budget": 1, "successes_strict": 1, "attacked": 4, "success_rate": 0.75,
           "success_rate_lo": lo1, "success_rate_hi": hi1, "success_rate_change_budget": 0.25,
           "success_rate_change_budget_lo": lo2, "success_rate_change_budget_hi": hi2, "success_rate_strict": 0.25,
           "success_rate_strict_lo": lo2, "success_rate_strict_hi": hi2, "mean_similarity": 0.9,
           "mean_change_rate": 0.05, "mean_queries": 10.0}
    empty = {**new, "bin": "10-99", **{k: None for k in new if k.startswith(("success_rate", "mean_"))},
             "successes": 0, "successes_change_budget": 0, "successes_strict": 0, "attacked": 0}
    RobustnessCallback()._write_files(tmp_path / "new", [], [new, empty])
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.csv").write_text("global_step,epoch,kind,bin,successes,attacked,success_rate,success_rate_strict\n"
                                     "7,0,positive,2-9,3,4,0.75,0.25\n")
    expected = (f"| positive | 2-9 | 75 [{100 * lo1:.0f}, {100 * hi1:.0f}] / 25 [{100 * lo2:.0f}, {100 * hi2:.0f}], "
                "4 |")
    for directory in (tmp_path / "new", old):
        show.main(str(directory))
        printed = capsys.readouterr().out
        assert expected in printed, printed
        assert "step 7: success / Fig. 2 (%) [95% CI], n" in printed
    show.main(str(tmp_path / "new"))
    assert "| positive | 10-99 | - / -, 0 |" in capsys.readouterr().out


def test_a_kind_without_pairs_leaves_the_other_attacked_and_none_skips_the_evaluation():
    """Pairs come from ``choose_pairs`` one kind at a time: an untrained model with no correct prediction still
    gets negative attacks; with no pairs of any kind the evaluation is skipped (a ValueError saying why)."""
    from types import SimpleNamespace

    from xmtc.attack.recipe import AttackSettings
    from xmtc.data.label_stats import LabelStats

    stats = LabelStats(["a", "b", "c", "d"], ["A", "B", "C", "D"], np.array([1, 2, 3, 4]), 10, 0.55, 1.5)

    class Constant:  # ranks labels 3, 2 first for every text: never a true label
        label_stats = stats

        def score_texts(self, texts, batch_size=64):
            return torch.tensor([[0.1, 0.2, 0.3, 0.4]]).expand(len(texts), 4)

    labels = [np.array([d % 2]) for d in range(6)]
    trainer = SimpleNamespace(datamodule=None, val_dataloaders=SimpleNamespace(
        dataset=SimpleNamespace(texts=[f"text {d}" for d in range(6)], labels=labels)))
    settings = AttackSettings(kinds=["positive", "negative"], k=2, min_labels_per_bin=1, samples_per_bin=2,
                              negative_clusters=False)
    jobs = RobustnessCallback(settings, max_bins=2)._choose_jobs(trainer, Constant())
    assert jobs and {j.kind for j in jobs} == {"negative"}
    for j in jobs:  # a label neither true nor predicted
        assert j.target not in labels[j.doc] and j.target in (0, 1)
    only_positive = RobustnessCallback(AttackSettings(kinds=["positive"], k=2, min_labels_per_bin=1), max_bins=2)
    with pytest.raises(ValueError, match="no correctly classified validation pairs to attack: no correctly classified"):
        only_positive._choose_jobs(trainer, Constant())


def test_nontargeted_jobs_attack_the_documents_true_labels():
    """A non-targeted job is binned by its document's rarest correctly predicted label and attacks all its true
    labels (Γ: those in the top-k)."""
    from types import SimpleNamespace

    from xmtc.attack.recipe import AttackSettings, build_search
    from xmtc.data.label_stats import LabelStats

    stats = LabelStats(["a", "b", "c", "d"], ["A", "B", "C", "D"], np.array([1, 2, 3, 4]), 10, 0.55, 1.5)

    class Constant:  # ranks labels 3, 2 first for every text, whatever it says
        label_stats = stats

        def score_texts(self, texts, batch_size=64):
            return torch.tensor([[0.1, 0.2, 0.3, 0.4]]).expand(len(texts), 4)

    labels = [np.array([0, 3]), np.array([1]), np.array([2, 3]), np.array([0])]
    trainer = SimpleNamespace(datamodule=None, global_rank=0, current_epoch=0, global_step=0,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0)),
                              val_dataloaders=SimpleNamespace(dataset=SimpleNamespace(
                                  texts=[f"grandpa text {d}" for d in range(4)], labels=labels)))
    settings = AttackSettings(kinds=["nontargeted"], k=2, min_labels_per_bin=1, samples_per_bin=4, encoder=None)
    callback = RobustnessCallback(settings, max_bins=2)
    jobs = callback._choose_jobs(trainer, Constant())
    assert sorted(j.doc for j in jobs) == [0, 2] and {j.kind for j in jobs} == {"nontargeted"}
    assert {j.doc: j.target for j in jobs} == {0: 3, 2: 2}  # the rarest correctly predicted label bins it

    class NoCandidates:
        def candidates(self, words, positions):
            return [[] for _ in positions]

    rows = callback._attack_group(trainer, Constant(), build_search(Constant(), NoCandidates(), settings), None,
                                  trainer.val_dataloaders.dataset.texts, jobs)
    gammas = {r["doc_index"]: r["message"] for r in rows}
    assert gammas == {0: "gamma=[3]", 2: "gamma=[2, 3]"}  # every true label in the top-2, not only the bin's


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_axml(tmp_path_factory.mktemp("robustness") / "toy", {"train": 300, "test": 30})


def test_callback_logs_curves_tables_and_files_and_leaves_training_unchanged(data, tiny_attack_models, tmp_path):
    import wandb
    from wandb_records import config, history

    mlm, encoder = tiny_attack_models
    with_cb, without = tmp_path / "with", tmp_path / "without"
    main(["fit", *_fit_args(data, with_cb), *_wandb(with_cb), "--trainer.max_epochs=2",
          *_callback(mlm, encoder, "--trainer.callbacks.settings.kinds=[positive,negative]")])
    wandb.finish()  # a CLI process finishes the run at exit; in-process we do it by hand
    main(["fit", *_fit_args(data, without), "--trainer.max_epochs=2"])

    # training is unchanged: the same weights, bit for bit
    a = torch.load(next(with_cb.rglob("last.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(next(without.rglob("last.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # CSV logger: per-bin scalars at the steps of the validation metrics (not at the sanity check)
    rows = _csv(next(with_cb.rglob("metrics.csv")))
    val_steps = [r["step"] for r in rows if r.get("val/P@1")]
    rob = [r for r in rows if r.get("robustness/positive/success_rate")]
    assert len(val_steps) == 2 and [r["step"] for r in rob] == val_steps
    bins = sorted(k.rsplit("freq_", 1)[1] for k in rob[0] if k.startswith("robustness/positive/success_rate/freq_"))
    assert len(bins) == 2
    for kind in ("positive", "negative"):
        for stat in ("success_rate", "success_rate_strict", "mean_queries", "attacked", "success_rate_lo",
                     "success_rate_hi", "success_rate_change_budget_lo", "success_rate_strict_hi"):
            assert all(f"robustness/{kind}/{stat}/freq_{b}" in rows[0] for b in bins), (kind, stat)
    assert {"robustness/positive/mean_similarity", "robustness/negative/mean_change_rate",
            "robustness/seconds", "robustness/share_of_epoch"} <= set(rows[0])

    # files in the log directory
    out = next(with_cb.rglob("robustness"))
    summary = _csv(out / "summary.csv")
    assert {(r["kind"], r["bin"]) for r in summary} == {(k, b) for k in ("positive", "negative")
                                                       for b in ["all", *bins]}
    assert len({r["global_step"] for r in summary}) == 2
    assert all(int(r["attacked"]) == 3 for r in summary if r["bin"] != "all")  # samples_per_bin per bin
    # every rate with its count and 95% Wilson interval, in summary.csv and in the loggers' scalars
    logged = {r["step"]: r for r in rob}
    for r in summary:
        n = int(r["attacked"])
        where = "" if r["bin"] == "all" else f"/freq_{r['bin']}"
        for rate, count in (("success_rate", "successes"), ("success_rate_change_budget", "successes_change_budget"),
                            ("success_rate_strict", "successes_strict")):
            lo, hi = wilson_interval(int(r[count]), n)
            assert float(r[rate]) == pytest.approx(int(r[count]) / n)
            assert (float(r[f"{rate}_lo"]), float(r[f"{rate}_hi"])) == pytest.approx((lo, hi))
            metric = logged[r["global_step"]]
            assert float(metric[f"robustness/{r['kind']}/{rate}_lo{where}"]) == pytest.approx(lo)
            assert float(metric[f"robustness/{r['kind']}/{rate}_hi{where}"]) == pytest.approx(hi)
    results = _jsonl(out / "results.jsonl")
    assert len(results) == 2 * 2 * 2 * 3  # evaluations x kinds x bins x samples
    for r in results:
        if r["kind"] == "positive" and r["status"] != "skipped":
            assert r["rank_before"] <= K and (r["rank_after"] > K) == r["success"]
        if r["kind"] == "negative" and r["status"] != "skipped":
            assert r["rank_before"] > K and (r["rank_after"] <= K) == r["success"]
        assert r["doc_id"].startswith("val:")
    assert any(r["success"] for r in results)
    for kind in ("positive", "negative"):
        assert (out / f"success_by_frequency_{kind}.png").stat().st_size > 5000
    # the dashboard picture of docs/dashboards.md, from these CSV logs (bands from the logged bounds)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_dashboard.py"), str(out.parent),
                           str(tmp_path / "dashboard.png")], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "dashboard.png").stat().st_size > 5000

    # the offline W&B run: scalars, the line charts over label frequency, the examples table, the full config
    run_dir = next(with_cb.glob("wandb/offline-run-*"))
    run_file = next(run_dir.glob("run-*.wandb"))
    logged = history(run_file)
    val = [r["trainer/global_step"] for r in logged if "val/P@1" in r]
    mine = [r for r in logged if "robustness/positive/success_rate" in r]
    assert len(mine) == 2 and [r["trainer/global_step"] for r in mine] == val
    assert all(f"robustness/negative/success_rate_strict/freq_{b}" in mine[-1] for b in bins)
    cfg = config(run_file)
    for kind in ("positive", "negative"):
        assert f"_wandb/visualize/robustness/{kind}/success_by_frequency" in cfg
        assert f"_wandb/visualize/robustness/{kind}/success_by_frequency_fig2" in cfg
    chart = json.loads((run_dir / "files" / mine[-1]["robustness/positive/success_by_frequency_table/path"])
                       .read_text(encoding="utf-8"))
    assert chart["columns"][:4] == ["label_frequency", "bin", "success_rate", "success_rate_fig2"]
    assert len(chart["data"]) == 2 * 2 and len({row[-1] for row in chart["data"]}) == 2  # a line per evaluation
    for row in map(lambda r: dict(zip(chart["columns"], r, strict=True)), chart["data"]):
        assert row["success_rate_lo"] <= row["success_rate"] <= row["success_rate_hi"]
        assert row["success_rate_fig2_lo"] <= row["success_rate_fig2"] <= row["success_rate_fig2_hi"]
    for kind in ("positive", "negative"):  # the bands as an image panel, each evaluation
        key = f"robustness/{kind}/success_by_frequency_bands"
        assert [r[f"{key}/_type"] for r in mine] == ["image-file"] * 2
        assert (run_dir / "files" / mine[-1][f"{key}/path"]).stat().st_size > 5000
    table = json.loads((run_dir / "files" / mine[-1]["robustness/examples/path"]).read_text(encoding="utf-8"))
    assert {"original", "adversarial", "target_name", "rank_before", "rank_after"} <= set(table["columns"])
    assert len(table["data"]) == 2 * 2 * 3
    first = dict(zip(table["columns"], table["data"][0], strict=True))
    assert first["success"] and first["original"] != first["adversarial"]  # successes first
    # the whole CLI config is in the run (and its files), not only the model's hyperparameters
    assert cfg["cli"]["trainer"]["max_epochs"] == 2
    assert any(c["class_path"] == "xmtc.callbacks.RobustnessCallback" for c in cfg["cli"]["trainer"]["callbacks"])
    assert "RobustnessCallback" in (run_dir / "files" / "xmtc_cli_config.yaml").read_text(encoding="utf-8")


@pytest.mark.slow
def test_ddp_two_processes_match_a_single_process_run(data, tiny_attack_models, tmp_path):
    """2-process gloo DDP fit with the callback (and a second one whose time limit stops it at once), then the
    callback alone in one process on the DDP checkpoint: the same pairs give the same attacks."""
    mlm, encoder = tiny_attack_models
    logs = tmp_path / "ddp"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "xmtc", "fit", *_fit_args(data, logs), *_wandb(logs),
           "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
           *_callback(mlm, encoder, "--trainer.callbacks.settings.kinds=[positive,negative]"),
           *_callback(mlm, encoder, "--trainer.callbacks.time_limit=0", "--trainer.callbacks.prefix=quick",
                      f"--trainer.callbacks.dirpath={tmp_path / 'quick'}")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    ddp = _jsonl(next(logs.rglob("robustness/results.jsonl")))
    assert {r["rank"] for r in ddp} == {0, 1}  # the pairs were shared out
    assert len(list(logs.glob("wandb/offline-run-*"))) == 1  # rank 0 alone logs
    metrics = _csv(next(logs.rglob("metrics.csv")))
    assert len([r for r in metrics if r.get("robustness/positive/success_rate")]) == 1
    quick = [r for r in metrics if r.get("quick/time_limited")]
    assert len(quick) == 1 and float(quick[0]["quick/time_limited"]) == 1.0
    assert not any(k.startswith("quick/positive") and v for k, v in quick[0].items())  # nothing attacked

    single_dir = tmp_path / "single"
    with single_thread():  # as each DDP process on 2 cores
        main(["validate", *_fit_args(data, tmp_path / "single_logs"), f"--ckpt_path={next(logs.rglob('last.ckpt'))}",
              *_callback(mlm, encoder, "--trainer.callbacks.settings.kinds=[positive,negative]",
                         f"--trainer.callbacks.dirpath={single_dir}")])
    single = _jsonl(single_dir / "results.jsonl")
    assert {r["rank"] for r in single} == {0}
    varying = {"rank", "seconds", "global_step", "epoch"}
    assert len(ddp) == len(single) == 2 * 2 * 3
    for x, y in zip(ddp, single, strict=True):
        assert {k: v for k, v in x.items() if k not in varying} == {k: v for k, v in y.items() if k not in varying}
