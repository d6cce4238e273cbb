"""Choosing what to attack: pairs, the paper's frequency bins, equal samples per bin, label clusters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmtc.attack.selection import (
    FrequencyBin,
    balanced_2means,
    bin_of,
    frequency_bins,
    label_representations,
    negative_pairs,
    positive_pairs,
    predicted_topk,
    sample_per_bin,
)


def _random_problem(seed: int, docs: int = 60, num_labels: int = 40, k: int = 5):
    rng = np.random.default_rng(seed)
    labels = [rng.choice(num_labels, size=rng.integers(1, 6), replace=False) for _ in range(docs)]
    scores = torch.rand(docs, num_labels, generator=torch.Generator().manual_seed(seed))
    topk = predicted_topk([scores[:25], scores[25:]], k)
    return labels, topk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positive_and_negative_pairs_match_brute_force(seed):
    labels, topk = _random_problem(seed)
    num_labels = 40
    got = {tuple(p) for p in positive_pairs(topk, labels, num_labels)}
    want = {(d, t) for d in range(len(labels)) for t in topk[d] if t in set(labels[d])}
    assert got == want
    clusters = np.arange(num_labels) // 4
    targets = np.array([3, 7, 11, 39])
    for cl in (None, clusters):
        got = {tuple(p) for p in negative_pairs(topk, labels, num_labels, targets, clusters=cl, chunk=3)}
        want = {(d, t) for d in range(len(labels)) for t in targets
                if t not in set(labels[d]) and t not in set(topk[d])
                and (cl is None or any(cl[y] == cl[t] and y != t for y in labels[d]))}
        assert got == want


def test_bins_close_at_min_labels_and_merge_the_remainder():
    freqs = np.array([1, 1, 1, 2, 2, 3, 5, 8, 8, 40, 90])
    targets = np.arange(11)
    bins = frequency_bins(freqs, targets, min_labels=3)
    # 1,1,1 | 2,2,3 | 5,8,8 close at 3 labels; 40,90 are too few and join the last bin
    assert bins == [FrequencyBin(1, 1), FrequencyBin(2, 3), FrequencyBin(5, 90)]
    # labels without an attackable pair do not count towards closing a bin
    bins = frequency_bins(freqs, np.array([0, 3, 4, 6, 9, 10]), min_labels=2)
    assert bins == [FrequencyBin(1, 2), FrequencyBin(5, 90)]
    with pytest.raises(ValueError, match="nothing to bin"):
        frequency_bins(freqs, np.array([], dtype=int), 3)


def test_bin_of_assigns_every_frequency_inside_the_bins():
    bins = [FrequencyBin(1, 1), FrequencyBin(2, 3), FrequencyBin(5, 8)]
    assert bin_of(np.array([0, 1, 2, 3, 4, 5, 8, 9]), bins).tolist() == [-1, 0, 1, 1, -1, 2, 2, -1]


def test_equal_seeded_samples_per_bin_and_clear_error_for_an_empty_bin():
    pairs = np.array([[d, lab] for d in range(30) for lab in (0, 1, 2)])
    label_bin = np.array([0, 1, 1])
    chosen, chosen_bin = sample_per_bin(pairs, label_bin, 2, per_bin=10, seed=4)
    assert np.bincount(chosen_bin).tolist() == [10, 10]
    again, _ = sample_per_bin(pairs, label_bin, 2, per_bin=10, seed=4)
    assert np.array_equal(chosen, again)
    _, all_bin = sample_per_bin(pairs, label_bin, 2, per_bin=None, seed=0)
    assert np.bincount(all_bin).tolist() == [30, 30]  # limited by the smallest bin
    with pytest.raises(ValueError, match=r"no attackable pairs in bin\(s\) \[2\]"):
        sample_per_bin(pairs, label_bin, 3, per_bin=5, seed=0)


def test_balanced_2means_recovers_planted_groups_with_min_size():
    rng = np.random.default_rng(0)
    groups, per_group, vocab = 8, 6, 400
    rows = []
    for g in range(groups):  # each group of labels uses its own 50 words
        for _ in range(per_group):
            v = np.zeros(vocab)
            v[g * 50 + rng.choice(50, 20, replace=False)] = rng.random(20) + 0.5
            rows.append(v)
    reps = sp.csr_matrix(np.array(rows))
    reps = sp.diags(1 / np.sqrt(reps.multiply(reps).sum(1).A1)) @ reps
    clusters = balanced_2means(reps, min_size=3, seed=0)
    sizes = np.bincount(clusters)
    assert sizes.min() >= 3 and sizes.max() < 6
    planted = np.repeat(np.arange(groups), per_group)
    for c in np.unique(clusters):  # every cluster lies inside one planted group
        assert len(set(planted[clusters == c])) == 1


def test_label_representations_sum_document_tfidf_rows():
    x = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]]))
    reps = label_representations(x, [np.array([0]), np.array([0, 1]), np.array([1])], num_labels=2).toarray()
    np.testing.assert_allclose(reps[0], np.array([1, 2, 0]) / np.sqrt(5))
    np.testing.assert_allclose(reps[1], [0, 2 / np.sqrt(13), 3 / np.sqrt(13)])


def test_documents_are_cut_to_what_the_model_reads():
    from types import SimpleNamespace

    from xmtc.attack.runner import fit_to_model
    from xmtc.data.tokenizer import WordTokenizer

    model = SimpleNamespace(tokenizer=WordTokenizer(["<pad>", "<unk>"], max_length=4))
    text, note = fit_to_model(model, "one two-three four five six")  # "two-three" is two tokens
    assert text == "one two-three four" and "first 3 of 5 words (model limit 4)" in note
    assert fit_to_model(model, "short text") == ("short text", "")
    assert fit_to_model(SimpleNamespace(), "no tokenizer at all") == ("no tokenizer at all", "")


def test_documents_are_cut_to_what_a_subword_model_reads():
    from types import SimpleNamespace

    from xmtc.attack.runner import fit_to_model
    from xmtc.data.train_tokenizer import train_unigram_tokenizer

    corpus = ["the council adopted the regulation on fishing quotas", "import licences for sugar products"] * 20
    tok = train_unigram_tokenizer(corpus, vocab_size=60, max_length=12)
    text = "the council adopted the regulation on fishing quotas for sugar products"
    cut, note = fit_to_model(SimpleNamespace(tokenizer=tok), text)
    words = cut.split()
    assert 0 < len(words) < len(text.split()) and text.startswith(cut) and "model limit 12" in note
    # every kept word is read whole by the model: its encoding fits the limit with the specials
    assert len(tok(cut)["input_ids"]) <= 12
    longer = " ".join(text.split()[:len(words) + 1])
    assert len(tok(longer)["input_ids"]) > 12  # and the next word would not have fit
    assert fit_to_model(SimpleNamespace(tokenizer=tok), "sugar") == ("sugar", "")
