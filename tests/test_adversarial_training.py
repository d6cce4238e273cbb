"""Adversarial training inside ``fit``, for real: tiny AttentionXML / APLC-XLNet models on small corpora built here,
word-vector substitutions from a vector file written here, and a 2-process gloo DDP fit with the shipped snippet."""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from tiny_models import single_thread
from toydata import REPO, write_axml

from xmtc.attack.recipe import AttackSettings, build_search
from xmtc.attack.word_vectors import WordVectorNeighbours
from xmtc.callbacks.adversarial_training import AdversarialTraining
from xmtc.data.datamodule import XMTCDataModule
from xmtc.models import AttentionXML

# --------------------------------------------------------------------------- a task one word decides

# label -> the word that decides it, and spellings of it that the vectors put next to it
DRIVERS = {"a": ("alpha", ["alfa", "alpah"]), "b": ("beta", ["betta", "btea"]), "c": ("gamma", ["gama", "gamm"])}
FILLERS = ["the", "council", "regulation", "article", "member", "states", "shall", "annex", "market", "rules"]


def one_word_corpus(root: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    """Documents of 9 filler words and the one word that decides their single label; the look-alike spellings
    occur only in a few documents of a label of their own (``z``), so the model knows them as words but not as
    evidence for ``a``, ``b`` or ``c``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        texts, labels = [], []
        for i in range(n):
            label = "abc"[i % 3]
            words = [*rng.choices(FILLERS, k=9), DRIVERS[label][0]]
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(label)
        if split == "train":
            spellings = [w for _, alike in DRIVERS.values() for w in alike]
            for _ in range(6):
                texts.append(" ".join([*spellings, *rng.choices(FILLERS, k=4)]))
                labels.append("z")
        (root / f"{split}_raw_texts.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        (root / f"{split}_labels.txt").write_text("".join(y + "\n" for y in labels), encoding="utf-8")
    return root


def one_word_vectors(path: Path, seed: int = 0) -> Path:
    """GloVe-format vectors: each deciding word with its spellings close together (cosine ~0.99), every other
    word far from all (random directions in 32 dimensions, cosine < 0.5 by a wide margin in practice)."""
    gen = np.random.default_rng(seed)
    lines = []
    for word, alike in DRIVERS.values():
        centre = gen.normal(size=32)
        for w in (word, *alike):
            lines.append((w, centre + 0.1 * gen.normal(size=32)))
    lines += [(w, gen.normal(size=32)) for w in FILLERS]
    path.write_text("".join(f"{w} {' '.join(f'{x:.5f}' for x in v)}\n" for w, v in lines), encoding="utf-8")
    return path


def _axml(dm: XMTCDataModule, seed: int, dropout: float = 0.0) -> AttentionXML:
    torch.manual_seed(seed)
    return AttentionXML(tokenizer=dm.tokenizer, label_stats=dm.label_stats, embedding_dim=16, hidden_size=16,
                        linear_sizes=[16], embedding_dropout=dropout, dropout=dropout,
                        optimizer=partial(torch.optim.Adam, lr=0.02))


def _settings(vectors: Path, **kw) -> AttackSettings:
    """A one-word substitution attack (10-word documents, change rate 0.1) with top-1 success."""
    return AttackSettings(kinds=["positive"], k=1, max_change_rate=0.1, importance="gradient", encoder=None,
                          transformation=WordVectorNeighbours(vectors, k=4), batch_size=64, documents_at_once=16,
                          **kw)


def _fit(data: Path, seed: int, epochs: int, callbacks: list, root: Path,
         dropout: float = 0.0) -> tuple[AttentionXML, XMTCDataModule]:
    dm = XMTCDataModule(str(data), val_fraction=0.1, max_length=20, batch_size=16, seed=seed)
    model = _axml(dm, seed, dropout)
    L.seed_everything(seed, verbose=False)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=root, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return model, dm


def _success_rate(model: AttentionXML, data: Path, vectors: Path) -> float:
    """The one-word attack on every test document whose label the model ranks first."""
    from xmtc.data.readers import read_split

    test = read_split(data, "test")
    index = {name: i for i, name in enumerate(model.label_stats.label_ids)}
    jobs = [(t, index[y[0]], "positive") for t, y in zip(test.texts, test.labels, strict=True)]
    model.eval()
    results = build_search(model, WordVectorNeighbours(vectors, k=4), _settings(vectors)).attack_many(jobs)
    attacked = [r for r in results if r.status != "skipped"]
    assert len(attacked) >= len(jobs) // 2, "the model should classify most test documents correctly"
    return sum(r.success for r in attacked) / len(attacked)


def test_adversarial_training_makes_the_one_word_attack_fail(tmp_path):
    data = one_word_corpus(tmp_path / "data")
    vectors = one_word_vectors(tmp_path / "vectors.txt")
    clean_rates, adv_rates = [], []
    with single_thread():
        for seed in (0, 1):
            clean, _ = _fit(data, seed, 8, [], tmp_path / f"clean{seed}")
            callback = AdversarialTraining(_settings(vectors), share=1.0, start_epoch=1, seed=seed)
            adv, _ = _fit(data, seed, 8, [callback], tmp_path / f"adv{seed}")
            assert callback.totals["added"] > 0 and callback.totals["steps"] > 0
            clean_rates.append(_success_rate(clean, data, vectors))
            adv_rates.append(_success_rate(adv, data, vectors))
    # the clean models rely on the one word; the adversarially trained ones learnt its look-alikes too
    assert min(clean_rates) >= 0.5, clean_rates
    # (measured: clean 0.67-0.78, adversarially trained 0.0-0.07 over seeds 0-2)
    assert max(adv_rates) <= min(clean_rates) - 0.4, (clean_rates, adv_rates)


def test_inactive_callback_leaves_the_weights_bit_identical(tmp_path):
    data = one_word_corpus(tmp_path / "data", n_train=90, n_test=6)
    vectors = one_word_vectors(tmp_path / "vectors.txt")
    with single_thread():
        # dropout on: a callback that drew random numbers or left eval mode on would change the weights
        plain, _ = _fit(data, 0, 2, [], tmp_path / "plain", dropout=0.2)
        idle = AdversarialTraining(_settings(vectors), start_epoch=5)
        model, _ = _fit(data, 0, 2, [idle], tmp_path / "idle", dropout=0.2)
    assert idle.totals["steps"] == 0
    a, b = plain.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"share": 0.0}, "share"), ({"share": 1.5}, "share"), ({"targets": "tail"}, "targets"),
    ({"mode": "both"}, "mode"), ({"keep": "all"}, "keep"), ({"start_epoch": -1}, "start_epoch"),
    ({"every_n_steps": 0}, "every_n_steps"), ({"max_seconds_per_step": 0}, "max_seconds_per_step"),
    ({"settings": AttackSettings(kinds=["negative"])}, "settings.kinds"),
    ({"settings": AttackSettings(kinds=["positive"], k=0)}, "settings.k"),
    ({"settings": AttackSettings(documents_at_once=0)}, "settings.documents_at_once"),
])
def test_options_are_validated_with_their_names(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialTraining(**kwargs)


def test_setup_fails_early_on_a_bad_path_or_an_importance_the_model_lacks(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        AdversarialTraining(AttackSettings(transformation=WordVectorNeighbours(tmp_path / "nowhere.txt")))
    data = one_word_corpus(tmp_path / "data", n_train=30, n_test=3)
    dm = XMTCDataModule(str(data), val_fraction=0.1, max_length=20, batch_size=16)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[AdversarialTraining(AttackSettings(masked_lm=str(tmp_path / "no-mlm")))])
    with pytest.raises(Exception, match="no-mlm"):
        trainer.fit(_axml(dm, 0), datamodule=dm)


def test_batch_rewritten_beside_or_instead_with_the_labels_kept(tmp_path):
    """One attacked step by hand: the rewritten batch holds what the mode says, encoded together."""
    data = one_word_corpus(tmp_path / "data", n_train=90, n_test=6)
    vectors = one_word_vectors(tmp_path / "vectors.txt")
    with single_thread():
        model, dm = _fit(data, 0, 3, [], tmp_path / "fit")
        for mode in ("beside", "instead"):
            callback = AdversarialTraining(_settings(vectors), share=1.0, mode=mode, targets="inverse_propensity")
            trainer = L.Trainer(accelerator="cpu", logger=False, max_epochs=1)
            callback.setup(trainer, model, "fit")
            batch = next(iter(dm.train_dataloader()))
            clean = model.on_before_batch_transfer(batch, 0)
            texts, targets = list(clean["texts"]), clean["targets"].clone()
            state = random.getstate(), torch.get_rng_state()
            stats = callback._attack_batch(trainer, model, clean)
            assert (random.getstate(), torch.equal(torch.get_rng_state(), state[1])) == (state[0], True)
            assert model.training  # put back
            # every document whose true label the model ranks first (k=1) is chosen (share 1)
            top = model.score_texts(texts).argmax(dim=1)
            correct = int(targets[torch.arange(len(texts)), top].sum())
            assert 0 < stats["added"] <= stats["chosen"] == correct
            n = len(texts) + (stats["added"] if mode == "beside" else 0)
            assert len(clean["texts"]) == clean["targets"].shape[0] == clean["index"].shape[0] == n
            assert all(v.shape[0] == n for v in clean["inputs"].values())
            expected = model.encode(clean["texts"])
            assert all(torch.equal(expected[k], clean["inputs"][k]) for k in expected)
            changed = [i for i in range(n) if i >= len(texts) or clean["texts"][i] != texts[i]]
            assert len(changed) == stats["added"]
            for i in changed:  # an adversarial copy keeps its document's labels, and differs from it by one word
                j = i if mode == "instead" else texts.index(next(t for t in texts if _one_word_apart(
                    t, clean["texts"][i])))
                assert torch.equal(clean["targets"][i], targets[j])
                assert _one_word_apart(texts[j], clean["texts"][i])
            if mode == "instead":
                assert torch.equal(clean["targets"], targets)


def _one_word_apart(a: str, b: str) -> bool:
    x, y = a.split(), b.split()
    return len(x) == len(y) and sum(u != v for u, v in zip(x, y, strict=True)) == 1


def test_aplc_xlnet_trains_with_the_callback(tmp_path):
    """The other model (a tiny XLNet with APLC's head, PW-cb loss) with mask importance and ``instead``."""
    from test_aplc import TINY_XLNET

    from xmtc.data.readers import read_split
    from xmtc.data.train_tokenizer import train_unigram_tokenizer
    from xmtc.losses import PWCBLoss
    from xmtc.models import APLCXLNet

    data = one_word_corpus(tmp_path / "data", n_train=60, n_test=3)
    vectors = one_word_vectors(tmp_path / "vectors.txt")
    tok = train_unigram_tokenizer(read_split(data, "train").texts, vocab_size=60, max_length=24)
    tok.save_pretrained(str(tmp_path / "tok"))
    dm = XMTCDataModule(str(data), tokenizer=str(tmp_path / "tok"), val_fraction=0.1, max_length=24, batch_size=16)
    torch.manual_seed(0)
    model = APLCXLNet(tokenizer=dm.tokenizer, label_stats=dm.label_stats, encoder_config=TINY_XLNET, cutoffs=[2],
                      loss=PWCBLoss())
    settings = AttackSettings(kinds=["positive"], k=3, max_change_rate=0.1, importance="mask", encoder=None,
                              transformation=WordVectorNeighbours(vectors, k=4))
    callback = AdversarialTraining(settings, share=0.5, mode="instead")
    with single_thread():
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                            num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
    assert callback.totals["steps"] == trainer.global_step and callback.totals["attacked"] > 0
    assert "adversarial/mean_step_seconds_with_attack" in trainer.callback_metrics


# --------------------------------------------------------------------------- DDP, through the CLI and the snippet


@pytest.mark.slow
def test_ddp_two_processes_fit_with_the_snippet_and_log(tmp_path, tiny_attack_models):
    mlm, _ = tiny_attack_models
    data = write_axml(tmp_path / "toy", {"train": 160, "test": 10})
    logs = tmp_path / "logs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cb = "--trainer.callbacks."
    cmd = [sys.executable, "-m", "xmtc", "fit", f"--config={REPO / 'configs' / 'demo_axml.yaml'}",
           f"--data.init_args.data_dir={data}", "--data.init_args.val_fraction=0.2", "--data.init_args.batch_size=16",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.max_epochs=2",
           "--trainer.log_every_n_steps=1", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
           f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.name=toy",
           "--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16",
           "--model.init_args.linear_sizes=[16]", "--trainer.accelerator=cpu", "--trainer.devices=2",
           "--trainer.strategy=ddp", f"--trainer.callbacks+={REPO / 'callbacks' / 'adversarial_training.yaml'}",
           f"{cb}settings.masked_lm={mlm}", f"{cb}settings.k=2", f"{cb}settings.max_change_rate=0.2",
           f"{cb}settings.batch_size=32", f"{cb}share=0.5"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(next(logs.rglob("metrics.csv")), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    steps = [r for r in rows if r.get("adversarial/attacked_step")]
    assert steps and len(steps) == len({r["step"] for r in steps})  # every step, once
    flags = [float(r["adversarial/attacked_step"]) for r in steps]
    assert 0 < sum(flags) < len(flags)  # epoch 0 trains clean (start_epoch 1 in the snippet), epoch 1 attacks
    assert sum(float(r["adversarial/attacked"]) for r in steps) > 0
    assert all(float(r["adversarial/attacked"]) == 0 for r, f in zip(steps, flags, strict=True) if not f)
    assert any(r.get("adversarial/mean_step_seconds_with_attack") for r in rows)
    assert any(r.get("adversarial/mean_step_seconds_without_attack") for r in rows)


def test_robustness_callback_in_the_same_fit_sees_the_difference(tmp_path):
    """Both callbacks and the epoch timer in one fit: the robustness callback's curve of the adversarially trained
    model ends far below that of the same fit without adversarial training, every epoch logs its time, and the
    robustness evaluation (no gradients, eval mode) does not stop the attacks in training."""
    from lightning.pytorch.loggers import CSVLogger

    from xmtc.callbacks import EpochTimer, RobustnessCallback

    data = one_word_corpus(tmp_path / "data", n_train=240, n_test=6)
    vectors = one_word_vectors(tmp_path / "vectors.txt")
    finals = {}
    for name in ("clean", "adv"):
        adv = AdversarialTraining(_settings(vectors), share=1.0, start_epoch=1, seed=0)
        measure = RobustnessCallback(dataclasses.replace(_settings(vectors), importance="mask", min_labels_per_bin=1,
                                                         samples_per_bin=40),
                                     every_n_epochs=4, max_bins=1, time_limit=None, dirpath=str(tmp_path / name))
        dm = XMTCDataModule(str(data), val_fraction=0.25, max_length=20, batch_size=16, seed=0)
        torch.manual_seed(0)
        model = AttentionXML(tokenizer=dm.tokenizer, label_stats=dm.label_stats, embedding_dim=16, hidden_size=16,
                             linear_sizes=[16], embedding_dropout=0.0, dropout=0.0, ks=(1, 3),  # 4 labels
                             optimizer=partial(torch.optim.Adam, lr=0.02))
        L.seed_everything(0, verbose=False)
        callbacks = [measure, EpochTimer()] + ([adv] if name == "adv" else [])
        trainer = L.Trainer(max_epochs=8, accelerator="cpu", logger=CSVLogger(tmp_path / "logs", name=name),
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=callbacks, num_sanity_val_steps=0, log_every_n_steps=1)
        with single_thread():
            trainer.fit(model, datamodule=dm)
        overall = [r for r in measure.curves if r["bin"] == "all"]
        assert len(overall) == 2 and all(r["attacked"] >= 10 for r in overall), overall
        finals[name] = overall[-1]["success_rate"]
        with open(next((tmp_path / "logs" / name).rglob("metrics.csv")), encoding="utf-8") as f:
            logged = list(csv.DictReader(f))
        times = [float(r["time/train_epoch_seconds"]) for r in logged if r.get("time/train_epoch_seconds")]
        assert len(times) == 8 and all(t > 0 for t in times)
        assert (tmp_path / name / "success_by_frequency_positive.png").exists()
        if name == "adv":
            assert adv.totals["added"] > 0
            totals = [float(r["adversarial/total_attacked"]) for r in logged if r.get("adversarial/total_attacked")]
            assert totals == sorted(totals) and totals[-1] == adv.totals["attacked"]
    # the clean model relies on the one word; the adversarially trained one learnt its look-alikes too
    assert finals["clean"] >= 0.5 and finals["adv"] <= finals["clean"] - 0.3, finals
