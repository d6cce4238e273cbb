"""``AttackRun`` on a known scorer: which pairs it attacks, and what an empty bin does."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from xmtc.attack.runner import AttackRun, AttackSettings
from xmtc.data.label_stats import LabelStats

# label 0 ("always") is in every document's top-2: no document can be a negative target's for it
WORDS = {"always": 0, "alpha": 1, "beta": 2, "gamma": 3, "delta": 4}


class KnownScorer:
    """score[l] = sigmoid(bias[l] + 3 * count of label l's word); label 0 is predicted everywhere."""

    def __init__(self, stats: LabelStats) -> None:
        self.label_stats = stats
        self.bias = torch.tensor([6.0, -1.0, -1.0, -1.0, -1.0])

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64, labels: Sequence[int] | None = None,
                    logits: bool = False) -> Tensor:
        counts = torch.zeros(len(texts), 5)
        for i, text in enumerate(texts):
            for word in text.split():
                if word in WORDS:
                    counts[i, WORDS[word]] += 1
        z = self.bias + 3.0 * counts
        z = z if labels is None else z[:, list(labels)]
        return z if logits else torch.sigmoid(z)


def test_an_empty_negative_bin_is_reported_and_the_positive_attacks_run(tmp_path, tiny_attack_models) -> None:
    mlm, _ = tiny_attack_models
    # training frequencies put each label in its own bin (min_labels_per_bin=1): 50, 40, 30, 20, 10
    stats = LabelStats(["l0", "l1", "l2", "l3", "l4"], ["always", "a", "b", "c", "d"],
                       np.array([50, 40, 30, 20, 10]), 100, 0.55, 1.5)
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(40):
        own = 1 + i % 4  # the document's second label and its word
        filler = " ".join(rng.choice(["river", "stone", "field", "market", "council"], size=8))
        texts.append(f"{filler} {list(WORDS)[own]} {filler}")
        labels.append(np.array([0, own]))
    settings = AttackSettings(kinds=["positive", "negative"], k=2, masked_lm=str(mlm), candidates=4, encoder=None,
                              min_labels_per_bin=1, samples_per_bin=3, negative_clusters=False, batch_size=16)
    run = AttackRun({"normal": KnownScorer(stats)}, texts, labels, [f"d{i}" for i in range(40)], settings,
                    tmp_path / "run")
    summary = run.run(show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    positive_bins = {r["bin"] for r in rows if r["kind"] == "positive"}
    negative_bins = {r["bin"] for r in rows if r["kind"] == "negative"}
    assert positive_bins == {"50", "40", "30", "20", "10"}  # every bin attacked, 3 pairs each
    assert sum(r["kind"] == "positive" for r in rows) == 15
    assert "50" not in negative_bins and negative_bins == {"40", "30", "20", "10"}
    assert summary["empty_bins"] == {"negative": ["50"]}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["empty_bins"] == {"negative": ["50"]}
    assert "No eligible negative pairs in bin(s) 50" in (tmp_path / "run" / "tables.md").read_text()
    for r in rows:
        if r["kind"] == "negative":
            assert r["target_label"] not in r["topk_before"]


def test_an_unknown_label_is_a_user_error_naming_the_option(tmp_path) -> None:
    import pytest

    from xmtc.errors import UserError

    stats = LabelStats(["l0", "l1", "l2", "l3", "l4"], ["Always", "Fishery", "Forestry", "Dairy", "Wine"],
                       np.array([50, 40, 30, 20, 10]), 100, 0.55, 1.5)
    settings = AttackSettings(k=2, encoder=None, labels=["fish"], min_labels_per_bin=1)
    run = AttackRun({"normal": KnownScorer(stats)}, ["alpha river", "beta stone"], [np.array([0, 1]), np.array([2])],
                    ["d0", "d1"], settings, tmp_path / "run")
    with pytest.raises(UserError, match=r"settings.labels: unknown label 'fish'.*did you mean \['Fishery'\]"):
        run.choose_pairs()
