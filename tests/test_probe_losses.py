"""scripts/probe_losses.py: the table from run files, and the ceiling (a normal model's odds re-ranked by each
loss head's weights) against a hand computation on a model whose scores are its label priors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import REPO, load_script

FREQS = [40, 30, 22, 15, 11, 8, 6, 4, 3, 2, 1, 1]  # training documents per label l0..l11


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_losses")


def test_table_from_run_files_without_fitting_again(probe, tmp_path):
    for name, p5 in {"normal": (0.20, 0.30), "pwcb": (0.10, 0.27)}.items():
        metrics = tmp_path / name / "v" / "metrics.csv"
        metrics.parent.mkdir(parents=True)
        metrics.write_text("epoch,step,train/loss,val/P@5,val/PSP@5\n0,5,0.9,,\n"
                           + "".join(f"{e},{e * 10 + 9},,{v},{v / 2}\n" for e, v in enumerate(p5)))
    table = probe.main(["--only", "normal", "pwcb", "--out", str(tmp_path)])
    assert "| normal | 20.0 · 30.0 | 10.0 · 15.0 | 100% |" in table
    assert "| pwcb | 10.0 · 27.0 | 5.0 · 13.5 | 90% |" in table


def _data(root: Path) -> Path:
    """Labels of known frequencies; test documents each with a few of them (the texts do not matter here)."""
    rng = np.random.default_rng(0)
    train_labels = [[] for _ in range(50)]
    for j, n in enumerate(FREQS):
        for d in rng.choice(50, n, replace=False):
            train_labels[d].append(f"l{j}")
    train_labels = [y or ["l0"] for y in train_labels]
    test_labels = [[f"l{j}" for j in sorted(rng.choice(12, 3, replace=False))] for _ in range(30)]
    root.mkdir()
    for split, labels in (("train", train_labels), ("test", test_labels)):
        (root / f"{split}_raw_texts.txt").write_text("".join(f"some words of document {i}\n"
                                                             for i in range(len(labels))))
        (root / f"{split}_labels.txt").write_text("".join(" ".join(y) + "\n" for y in labels))
    return root


def _p5(ranking: np.ndarray, test_labels: list[set[int]]) -> float:
    top = set(np.argsort(-ranking, kind="stable")[:5].tolist())  # the same ranking for every document
    return 100 * float(np.mean([len(top & y) / 5 for y in test_labels]))


def test_ceiling_ranks_a_prior_model_as_each_head_would(probe, tmp_path):
    from xmtc.cli import main
    from xmtc.data.label_stats import class_balanced, inverse_propensity
    from xmtc.data.readers import read_split

    data = _data(tmp_path / "data")
    main(["fit", f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}",
          f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false", "--trainer.max_steps=1", "--trainer.callbacks=null",
          "--trainer.enable_checkpointing=true", "--model.init_args.prior_bias=true",
          "--model.init_args.embedding_dim=8", "--model.init_args.hidden_size=8", "--model.init_args.linear_sizes=[8]",
          "--data.init_args.min_word_freq=1"])
    ckpt = next((tmp_path / "logs").rglob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    out_layer = max(k for k in state["state_dict"] if k.startswith("mlp.") and k.endswith(".weight"))
    state["state_dict"][out_layer].zero_()  # every score is its label's bias plus one shared constant
    stats = state["xmtc"]["label_stats"]  # the training part of the split (the demo config carves validation)
    label_ids, n, n_docs = stats["label_ids"], np.array(stats["freqs"], dtype=float), stats["num_train_docs"]
    odds = n / (n_docs - n)
    state["state_dict"]["label_bias"] = torch.tensor(np.log(odds), dtype=torch.float32)
    torch.save(state, ckpt)

    table = probe.ceiling(str(ckpt), str(data))
    index = {label: i for i, label in enumerate(label_ids)}
    test = [{index[x] for x in y if x in index} for y in read_split(data, "test").labels]
    w_pw = 2 * inverse_propensity(n, n_docs, stats["propensity_a"], stats["propensity_b"]) - 1
    expected = {"normal": _p5(odds, test), "PW": _p5(odds * w_pw, test)}
    for beta in (0.9, 0.99, 0.999):
        expected[f"PW-cb (beta {beta})"] = _p5(odds * w_pw * class_balanced(n, beta), test)
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ")[1:] for r in table.splitlines()[2:]}
    for name, p5 in expected.items():
        got_p5, got_share = float(rows[name][0]), float(rows[name][1].rstrip("%"))
        assert got_p5 == pytest.approx(p5, abs=0.05), (name, table)
        assert got_share == pytest.approx(100 * p5 / expected["normal"], abs=0.51), (name, table)
    assert not math.isclose(expected["normal"], expected["PW-cb (beta 0.999)"])  # the weights changed the ranking
