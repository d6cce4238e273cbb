"""The datamodule on both on-disk formats: splits, label space, statistics from train only."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from toydata import DEMO, toy_corpus, write_axml

from xmtc.data.datamodule import XMTCDataModule
from xmtc.data.label_stats import inverse_propensity
from xmtc.data.readers import DataFormatError


def _write_aplc(root: Path) -> Path:
    root.mkdir()
    for split, n, seed in (("train", 80, 0), ("dev", 20, 1)):
        texts, labels = toy_corpus(n, seed)
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "label"])
            for i, (t, y) in enumerate(zip(texts, labels, strict=True)):
                w.writerow([f"{split}{i}", t.replace(" ", ", ", 1), ",".join(y)])
    (root / "labels.txt").write_text("dairy\nfishery\ntaxation\ntransport\nwine\n", encoding="utf-8")
    return root


def test_carved_validation_is_seeded_disjoint_and_excluded_from_statistics(tmp_path):
    data = write_axml(tmp_path / "toy", {"train": 200})
    dm = XMTCDataModule(str(data), val_fraction=0.25, seed=3)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 150 and len(val) == 50
    again = XMTCDataModule(str(data), val_fraction=0.25, seed=3)
    again.setup("fit")
    assert again.datasets["val"].texts == val.texts  # seeded
    stats = dm.label_stats
    counted = np.bincount(np.concatenate(train.labels), minlength=len(stats))
    np.testing.assert_array_equal(stats.freqs, counted)  # training part only
    assert stats.num_train_docs == 150
    assert list(stats.freqs) == sorted(stats.freqs, reverse=True)  # most frequent label first
    np.testing.assert_allclose(stats.inv_propensity, inverse_propensity(stats.freqs, 150, 0.55, 1.5))


def test_propensity_presets_and_explicit_values(tmp_path):
    data = write_axml(tmp_path / "toy", {"train": 50})
    # the Repository's convention: only the large Wikipedia and Amazon sets have their own (A, B)
    for preset, ab in [("wikipedia-500k", (0.5, 0.4)), ("Amazon-670K", (0.6, 2.6)), ("wiki10-31k", (0.55, 1.5)),
                       ("amazoncat-13k", (0.55, 1.5)), ("eurlex57k", (0.55, 1.5))]:
        stats = XMTCDataModule(str(data), propensity=preset).label_stats
        assert (stats.propensity_a, stats.propensity_b) == ab, preset
    assert XMTCDataModule(str(data), propensity=(0.6, 2.6)).label_stats.propensity_b == 2.6
    with pytest.raises(ValueError, match="unknown preset 'wikipedia'.*wiki10-31k"):
        XMTCDataModule(str(data), propensity="wikipedia")
    # the old names were applied to Wiki10-31K / AmazonCat-13K: refused with the reason and the replacement
    with pytest.raises(ValueError, match="data.propensity: the preset 'wiki' was removed.*wiki10-31k = 0.55, 1.5"):
        XMTCDataModule(str(data), propensity="wiki")
    with pytest.raises(ValueError, match="'amazon' was removed.*amazoncat-13k"):
        XMTCDataModule(str(data), propensity="amazon")


@pytest.mark.parametrize("config", sorted(Path(__file__).parents[1].glob("configs/*.yaml")), ids=lambda p: p.name)
def test_every_config_names_a_known_propensity_preset(config):
    import yaml

    from xmtc.data.label_stats import propensity_preset

    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    preset = (data.get("init_args") or {}).get("propensity", "default")
    if isinstance(preset, str):
        a, b = propensity_preset(preset)
        # only the Repository's large Wikipedia / Amazon sets differ from 0.55, 1.5; none of the configs is one
        assert (a, b) == (0.55, 1.5), config.name


def test_aplc_csv_directory_with_dev_split(tmp_path):
    dm = XMTCDataModule(str(_write_aplc(tmp_path / "aplc")), val_split="dev")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 80 and len(dm.datasets["val"]) == 20
    assert sorted(dm.label_stats.label_ids) == ["dairy", "fishery", "taxation", "transport", "wine"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["targets"].shape == (32, 5)
    assert batch["targets"].sum(1).min() >= 1


def test_unseen_test_labels_are_reported_and_dropped(tmp_path):
    data = write_axml(tmp_path / "toy", {"train": 60, "test": 10})
    lines = (data / "test_labels.txt").read_text(encoding="utf-8").splitlines()
    lines[0] += " brand_new_label"
    (data / "test_labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dm = XMTCDataModule(str(data))
    with pytest.warns(UserWarning, match="1 labels .1 assignments. never occur in training"):
        dm.setup("test")
    assert all(y.max() < dm.num_labels for y in dm.datasets["test"].labels)


def test_skip_mode_drops_bad_documents_and_keeps_alignment(tmp_path):
    data = write_axml(tmp_path / "toy", {"train": 30})
    texts = (data / "train_raw_texts.txt").read_text(encoding="utf-8").splitlines()
    texts[4] = "   "
    (data / "train_raw_texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"train_raw_texts.txt:5: empty"):
        XMTCDataModule(str(data)).label_stats  # noqa: B018
    dm = XMTCDataModule(str(data), on_invalid="skip", val_fraction=0)
    with pytest.warns(UserWarning, match="skipped 1 invalid document"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 29


def test_demo_subset_is_bundled_and_loads():
    dm = XMTCDataModule(str(DEMO))
    assert dm.label_stats.num_train_docs == 3600  # 4000 minus the seeded 10% validation part
    assert dm.num_labels > 1000 and dm.label_stats.label_names[0] != dm.label_stats.label_ids[0]
    assert len(dm.tokenizer) > 5000
