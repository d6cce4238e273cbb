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
    label_matrix,
    label_representations,
    negative_pairs,
    positive_pairs,
    predicted_topk,
    sample_bins,
    sample_negative_pairs,
    sample_per_bin,
    spread_over_targets,
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
    # asked to report instead: the empty bin gets nothing, the others their equal share
    kept, kept_bin = sample_per_bin(pairs, label_bin, 3, per_bin=5, seed=0, empty="skip")
    assert np.bincount(kept_bin, minlength=3).tolist() == [5, 5, 0] and len(kept) == 10
    report = sample_bins(pairs, label_bin, 3, per_bin=50, seed=0, spread=False)
    assert report.empty_bins == [2] and report.found.tolist() == [30, 50, 0]
    assert report.counts.tolist() == [30, 30, 0]


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


# -- negative pairs sampled without listing them, spread over targets --

def _one_heavy_target(docs: int = 100):
    """Target 0 is eligible for every document; targets 1..9 each for document j only (every other document
    has j as a true label). Labels 10..14 fill every top-k and belong to no bin."""
    labels = [np.array([j for j in range(1, 10) if j != d]) for d in range(docs)]
    topk = np.tile(np.arange(10, 15), (docs, 1))
    label_bin = np.array([0] * 10 + [-1] * 5)
    return labels, topk, label_bin


def _eligible_set(labels, tops, num_labels, clusters=None):
    """Brute force over every (doc, label): the definition of a negative-attack pair, for all models."""
    return {(d, t) for d in range(len(labels)) for t in range(num_labels)
            if t not in set(labels[d]) and all(t not in set(top[d]) for top in tops)
            and (clusters is None or any(clusters[y] == clusters[t] for y in labels[d]))}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_bin_sample_spreads_over_targets_before_repeating_one(seed):
    labels, topk, label_bin = _one_heavy_target()
    s = sample_negative_pairs([topk], labels, 15, label_bin, 1, per_bin=10, seed=seed)
    assert sorted(s.pairs[:, 1].tolist()) == list(range(10))  # all 10 targets, not mostly target 0
    assert all((d == t) for d, t in s.pairs[s.pairs[:, 1] > 0].tolist())  # each light target's only document
    more = sample_negative_pairs([topk], labels, 15, label_bin, 1, per_bin=15, seed=seed)
    assert np.bincount(more.pairs[:, 1]).tolist() == [6] + [1] * 9
    assert sorted(more.pairs[:10, 1].tolist()) == list(range(10))  # round 1 first, then target 0 again
    assert len(set(map(tuple, more.pairs.tolist()))) == 15  # never the same pair twice
    # the same rule for pairs already listed (the callback, positives)
    pairs = negative_pairs(topk, labels, 15, np.arange(10))
    assert len(pairs) == 109
    spread = sample_bins(pairs, label_bin, 1, per_bin=10, seed=seed)
    assert sorted(spread.pairs[:, 1].tolist()) == list(range(10))


def test_spread_order_is_round_robin_in_one_target_order_and_random_within_a_target():
    rng = np.random.default_rng(0)
    pairs = np.stack([np.arange(300), rng.integers(0, 12, 300)], axis=1)
    out = spread_over_targets(pairs, np.random.default_rng(5))
    assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, pairs.tolist()))
    seen: dict[int, int] = {}
    rounds = []
    for t in out[:, 1].tolist():
        rounds.append(seen.get(t, 0))
        seen[t] = rounds[-1] + 1
    assert rounds == sorted(rounds)  # no target gets its (r+1)-th pair before every target had its r-th
    first = out[:12, 1].tolist()
    for r in range(1, 10):  # the targets come in the same order every round
        in_round = out[np.array(rounds) == r, 1].tolist()
        assert in_round == [t for t in first if t in set(in_round)]
    firsts = {int(spread_over_targets(pairs, np.random.default_rng(s))[0, 0]) for s in range(40)}
    assert len(firsts) > 15  # which pair leads is random, not the first listed


@pytest.mark.parametrize("use_clusters", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_negative_samples_are_eligible_for_every_model_and_exhaust_to_the_full_set(use_clusters, seed):
    rng = np.random.default_rng(seed)
    num_labels, docs = 40, 60
    labels = [rng.choice(num_labels, size=rng.integers(0, 6), replace=False) for _ in range(docs)]
    tops = [rng.integers(0, num_labels, (docs, 5)), rng.integers(0, num_labels, (docs, 3))]
    clusters = rng.permutation(np.arange(num_labels) // 4) if use_clusters else None
    label_bin = np.arange(num_labels) % 3
    want = _eligible_set(labels, tops, num_labels, clusters)
    every = sample_negative_pairs(tops, labels, num_labels, label_bin, 3, per_bin=10**6, seed=seed,
                                  clusters=clusters, equal=False)
    assert set(map(tuple, every.pairs.tolist())) == want and len(every.pairs) == len(want)
    assert np.array_equal(every.bins, label_bin[every.pairs[:, 1]])
    some = sample_negative_pairs(tops, labels, num_labels, label_bin, 3, per_bin=25, seed=seed,
                                 clusters=clusters, allowed=np.arange(0, num_labels, 2))
    got = set(map(tuple, some.pairs.tolist()))
    assert got <= want and len(got) == len(some.pairs) == 75 and (some.pairs[:, 1] % 2 == 0).all()
    # one model alone allows more pairs than both together
    alone = sample_negative_pairs(tops[:1], labels, num_labels, label_bin, 3, 10**6, seed, clusters=clusters,
                                  equal=False)
    one = _eligible_set(labels, tops[:1], num_labels, clusters)
    assert set(map(tuple, alone.pairs.tolist())) == one and one > want
    # the sparse label matrix is accepted as well as ragged arrays
    sparse = sample_negative_pairs(tops, label_matrix(labels, num_labels), num_labels, label_bin, 3, per_bin=25,
                                   seed=seed, clusters=clusters, allowed=np.arange(0, num_labels, 2))
    assert np.array_equal(sparse.pairs, some.pairs)


def test_negative_samples_are_deterministic_per_seed_and_a_smaller_sample_is_a_prefix():
    rng = np.random.default_rng(0)
    num_labels, docs = 500, 300
    labels = [rng.choice(num_labels, size=rng.integers(1, 8), replace=False) for _ in range(docs)]
    tops = [rng.integers(0, num_labels, (docs, 5))]
    label_bin = np.arange(num_labels) % 4
    a = sample_negative_pairs(tops, labels, num_labels, label_bin, 4, per_bin=300, seed=7, equal=False)
    b = sample_negative_pairs(tops, labels, num_labels, label_bin, 4, per_bin=300, seed=7, equal=False)
    c = sample_negative_pairs(tops, labels, num_labels, label_bin, 4, per_bin=300, seed=8, equal=False)
    assert np.array_equal(a.pairs, b.pairs) and not np.array_equal(a.pairs, c.pairs)
    small = sample_negative_pairs(tops, labels, num_labels, label_bin, 4, per_bin=40, seed=7)
    for x, y in zip(small.by_bin(), a.by_bin(), strict=True):
        assert np.array_equal(x, y[:40])
    assert len(np.unique(a.by_bin()[0][:, 1])) == 125  # 300 pairs over the bin's 125 targets: all of them


def test_equal_counts_per_bin_with_empty_bins_reported_not_fatal():
    # bin 0: targets 0-1; bin 1: targets 2-4; bin 2: target 5, a true label of every document; bin 3: no label
    docs = 12
    labels = [np.array([5, 6 + d % 3]) for d in range(docs)]
    topk = np.tile(np.array([6, 7, 8]), (docs, 1))
    topk[:5, 0] = 0  # target 0 is predicted for documents 0-4
    label_bin = np.array([0, 0, 1, 1, 1, 2, -1, -1, -1])
    s = sample_negative_pairs([topk], labels, 9, label_bin, 4, per_bin=100, seed=0)
    assert s.found.tolist() == [7 + 12, 36, 0, 0] and s.empty_bins == [2, 3]
    assert s.counts.tolist() == [19, 19, 0, 0]
    assert [len(p) for p in s.by_bin()] == [19, 19, 0, 0]
    capped = sample_negative_pairs([topk], labels, 9, label_bin, 4, per_bin=10, seed=0)
    assert capped.counts.tolist() == [10, 10, 0, 0]
    nothing = sample_negative_pairs([topk], labels, 9, np.full(9, -1), 4, per_bin=10, seed=0)
    assert nothing.empty_bins == [0, 1, 2, 3] and nothing.pairs.shape == (0, 2)
    with pytest.raises(ValueError, match=r"topks\[0\] has shape"):
        sample_negative_pairs([topk[:3]], labels, 9, label_bin, 4, per_bin=10, seed=0)


@pytest.mark.parametrize("use_clusters", [False, True])
def test_negative_sampling_at_30k_labels_is_fast_and_small(use_clusters):
    import time
    import tracemalloc

    rng = np.random.default_rng(0)
    num_labels, docs, per_doc = 30_938, 6_616, 19
    freq = rng.zipf(1.6, num_labels).clip(1, 5000).astype(float)
    rows = np.repeat(np.arange(docs), per_doc)
    cols = rng.choice(num_labels, size=len(rows), p=freq / freq.sum())
    truth = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(docs, num_labels))
    tops = [rng.integers(0, num_labels, (docs, 5)) for _ in range(2)]
    label_bin = np.minimum(np.arange(num_labels) * 5 // num_labels, 4)
    clusters = np.arange(num_labels) // 4 if use_clusters else None
    tracemalloc.start()
    start = time.perf_counter()
    try:
        s = sample_negative_pairs(tops, truth, num_labels, label_bin, 5, per_bin=200, seed=0, clusters=clusters)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.counts.tolist() == [200] * 5 and s.empty_bins == []
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MB"
    assert seconds < 20  # ~0.05 s on an idle core; generous for a loaded machine
    d, t = s.pairs[:, 0], s.pairs[:, 1]
    assert not np.asarray(truth[d, t]).any()
    assert not any((top[d] == t[:, None]).any() for top in tops)
    assert len(np.unique(t)) == 1000  # one document per target
    if use_clusters:
        member = truth[d].toarray() & (clusters[None, :] == clusters[t][:, None])
        assert member.any(axis=1).all()


# -- one selection for the attack command and the robustness callback (choose_pairs) --
# The former paths below are AttackRun.choose_pairs and RobustnessCallback._choose_jobs as they were before
# choose_pairs replaced them (their draws written out with the same primitives): the refactor must keep every
# pair, so the demo's figures and the robustness curves stay as they were.

def _former_cli_pairs(tops, labels, stats, s, clusters):
    n_labels = len(stats)
    allowed = None if s.labels is None else stats.indices_of(s.labels)
    keys = [set(map(tuple, positive_pairs(t, labels, n_labels))) for t in tops]
    pos = np.array(sorted(set.intersection(*keys)), dtype=np.int64).reshape(-1, 2)
    pos = pos if allowed is None else pos[np.isin(pos[:, 1], allowed)]
    bins = frequency_bins(stats.freqs, pos[:, 1], s.min_labels_per_bin)
    label_bin = bin_of(stats.freqs, bins)
    chosen, empty = {}, {}
    if "positive" in s.kinds:
        chosen["positive"], _ = sample_per_bin(pos, label_bin, len(bins), s.samples_per_bin, s.seed)
    if "negative" in s.kinds:
        sample = sample_negative_pairs(list(tops), labels, n_labels, label_bin, len(bins), s.samples_per_bin or 200,
                                       s.seed + 1, clusters=clusters, allowed=allowed)
        chosen["negative"] = sample.pairs
        if sample.empty_bins:
            empty["negative"] = [bins[b].name for b in sample.empty_bins]
    return chosen, bins, empty


def _former_callback_jobs(top, docs, labels, stats, s, bins, clusters):
    """(kind, document, target, bin) in job order, from the top-k of the callback's documents ``docs``."""
    n_labels, nb = len(stats), len(bins)
    allowed = None if s.labels is None else stats.indices_of(s.labels)
    label_bin = bin_of(stats.freqs, bins)
    doc_labels = [labels[d] for d in docs]
    rng = np.random.default_rng(s.seed)
    per_kind = {}
    if "positive" in s.kinds:
        pos = positive_pairs(top, doc_labels, n_labels)
        pos = pos if allowed is None else pos[np.isin(pos[:, 1], allowed)]
        per_kind["positive"] = []
        for b in range(nb):
            pairs = pos[label_bin[pos[:, 1]] == b]
            if s.samples_per_bin is not None and len(pairs) > s.samples_per_bin:
                pairs = pairs[np.sort(rng.choice(len(pairs), s.samples_per_bin, replace=False))]
            per_kind["positive"].append(pairs)
    if "negative" in s.kinds:
        per_kind["negative"] = sample_negative_pairs([top], doc_labels, n_labels, label_bin, nb,
                                                     s.samples_per_bin or 200, s.seed, clusters=clusters,
                                                     allowed=allowed, equal=False).by_bin()
    jobs = []
    for j in range(max(len(p) for per_bin in per_kind.values() for p in per_bin)):
        for kind in s.kinds:
            for b, pairs in enumerate(per_kind[kind]):
                if j < len(pairs):
                    jobs.append((kind, int(docs[pairs[j, 0]]), int(pairs[j, 1]), b))
    return jobs


class _CentroidClassifier:
    """A real, fast multilabel classifier: cosine of a text's TF-IDF with each label's summed training TF-IDF."""

    def __init__(self, train_texts, train_labels, stats, sublinear: bool) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.label_stats = stats
        self.vectorizer = TfidfVectorizer(sublinear_tf=sublinear, max_features=20_000, dtype=np.float32)
        x = self.vectorizer.fit_transform(train_texts)
        self.reps = label_representations(x, train_labels, len(stats)).T.tocsr().astype(np.float32)
        self.calls = []

    def score_texts(self, texts, batch_size: int = 64, labels=None, logits: bool = False) -> torch.Tensor:
        self.calls.append((len(texts), batch_size))
        return torch.from_numpy((self.vectorizer.transform(texts) @ self.reps).toarray())


@pytest.fixture(scope="module")
def demo_problem():
    """Two centroid classifiers of the bundled EURLEX57K demo subset, with its first 300 test documents."""
    from toydata import DEMO

    from xmtc.attack.selection import label_clusters
    from xmtc.data.label_stats import LabelStats
    from xmtc.data.readers import read_split

    train, test = read_split(DEMO, "train"), read_split(DEMO, "test")
    ids = sorted({lab for y in train.labels for lab in y})
    index = {lab: i for i, lab in enumerate(ids)}
    train_labels = [np.array([index[x] for x in y], dtype=np.int64) for y in train.labels]
    freqs = np.bincount(np.concatenate(train_labels), minlength=len(ids))
    stats = LabelStats(ids, [f"label {lab}" for lab in ids], freqs, len(train_labels), 0.55, 1.5)
    texts = test.texts[:300]
    labels = [np.array([index[x] for x in y if x in index], dtype=np.int64) for y in test.labels[:300]]
    models = [_CentroidClassifier(train.texts, train_labels, stats, sublinear) for sublinear in (True, False)]
    clusters = label_clusters(train.texts, train_labels, len(ids), seed=3)  # the settings' seed
    return stats, texts, labels, models, clusters, (train.texts, train_labels)


def _settings(**changes):
    from xmtc.attack.recipe import AttackSettings

    base = dict(kinds=["positive", "negative"], k=5, min_labels_per_bin=15, samples_per_bin=6, seed=3,
                negative_clusters=False, batch_size=50)
    return AttackSettings(**{**base, **changes})


def _requested_labels(stats, top, labels):
    """Settings asking for 12 correctly predicted labels of spread frequencies, by id and by upper-cased name."""
    targets = np.unique(positive_pairs(top, labels, len(stats))[:, 1])
    spread = targets[np.argsort(stats.freqs[targets], kind="stable")][np.linspace(0, len(targets) - 1, 12).astype(int)]
    return _settings(min_labels_per_bin=4, labels=[stats.label_ids[i] for i in spread[::2]]
                     + [stats.label_names[i].upper() for i in spread[1::2]])


CLI_CASES = {
    "one model": (1, {}),
    "two models, clusters": (2, {"negative_clusters": True}),
    "every correct pair, 200 negatives per bin": (2, {"samples_per_bin": None, "min_labels_per_bin": 40}),
    "requested labels": (1, {"labels": None}),  # filled with the demo's commonest correct labels below
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_choose_pairs_draws_what_the_attack_command_drew(demo_problem, case):
    from xmtc.attack.selection import choose_pairs, predicted_topk_of

    stats, texts, labels, models, clusters, _ = demo_problem
    n_models, changes = CLI_CASES[case]
    s = _settings(**changes)
    tops = [predicted_topk_of(m, texts, s.k, s.batch_size) for m in models[:n_models]]
    if case == "requested labels":
        s = _requested_labels(stats, tops[0], labels)
    cl = clusters if s.negative_clusters else None
    want, want_bins, want_empty = _former_cli_pairs(tops, labels, stats, s, cl)
    allowed = None if s.labels is None else stats.indices_of(s.labels)
    got = choose_pairs(tops, labels, stats, s.kinds, samples_per_bin=s.samples_per_bin,
                       min_labels_per_bin=s.min_labels_per_bin, seed=s.seed, allowed=allowed, clusters=cl)
    assert got.bins == want_bins and len(want_bins) >= 2
    assert list(got.pairs) == list(want)
    for kind in want:
        assert len(want[kind]) > 0 and np.array_equal(got.pairs[kind], want[kind]), kind
    assert got.empty_bins == want_empty
    assert np.array_equal(got.label_bin, bin_of(stats.freqs, want_bins))
    for kind, pairs in got.pairs.items():  # grouped by bin, in bin order
        assert np.all(np.diff(got.pair_bins(kind)) >= 0) and sum(map(len, got.by_bin(kind))) == len(pairs)


CALLBACK_CASES = {
    "positive and negative": {},
    "negative with clusters, all positives": {"negative_clusters": True, "samples_per_bin": None},
    "negative first, requested labels": {"kinds": ["negative", "positive"], "labels": ["label 2897", "1644"]},
}


@pytest.mark.parametrize("case", CALLBACK_CASES)
def test_the_robustness_callback_draws_what_it_drew(demo_problem, case):
    from types import SimpleNamespace

    from xmtc.attack.selection import predicted_topk_of
    from xmtc.callbacks.robustness import RobustnessCallback

    stats, texts, labels, models, clusters, _ = demo_problem
    s = _settings(**CALLBACK_CASES[case])
    cb = RobustnessCallback(settings=s, max_bins=3, max_documents=200)
    cb._clusters = clusters  # what it computes from the datamodule's training split
    val = SimpleNamespace(texts=texts, labels=labels)
    trainer = SimpleNamespace(val_dataloaders=SimpleNamespace(dataset=val), datamodule=None)
    model = models[0]
    for _evaluation in range(2):  # the second evaluation keeps the first one's documents and bins
        model.calls.clear()
        jobs = cb._choose_jobs(trainer, model)
        assert model.calls and all(bs == s.batch_size and n <= s.batch_size for n, bs in model.calls)
        top = predicted_topk_of(model, [texts[d] for d in cb._docs], s.k, s.batch_size)
        want = _former_callback_jobs(top, cb._docs, labels, stats, s, cb._bins,
                                     clusters if s.negative_clusters else None)
        assert [(j.kind, j.doc, j.target, j.bin) for j in jobs] == want
        assert [j.order for j in jobs] == list(range(len(jobs))) and len(cb._docs) == 200
        assert {j.kind for j in jobs} == set(s.kinds)


# -- choose_pairs: kinds, empty bins, non-targeted documents; label lookup --

def _stats(freqs, names=None):
    from xmtc.data.label_stats import LabelStats

    ids = [f"l{i}" for i in range(len(freqs))]
    return LabelStats(ids, names or [f"name {i}" for i in range(len(freqs))], np.asarray(freqs), 100, 0.55, 1.5)


def test_correct_pairs_are_those_every_model_gets_right():
    labels, top_a = _random_problem(0)
    _, top_b = _random_problem(1)
    from xmtc.attack.selection import correct_pairs

    want = sorted((d, t) for d in range(len(labels)) for t in set(labels[d]) if t in top_a[d] and t in top_b[d])
    assert [tuple(p) for p in correct_pairs([top_a, top_b], labels, 40)] == want and want
    by_rank = correct_pairs([top_a], labels, 40, by_rank=True)
    assert np.array_equal(by_rank, positive_pairs(top_a, labels, 40))
    assert sorted(map(tuple, by_rank)) == [tuple(p) for p in correct_pairs([top_a], labels, 40)]


def test_predicted_topk_of_scores_in_batches():
    from xmtc.attack.selection import predicted_topk_of

    class Scorer:
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def score_texts(self, texts, batch_size=64):
            self.calls.append((len(texts), batch_size))
            return torch.tensor([[float(len(t)), 1.0, float(t.count("a"))] for t in texts])

    scorer = Scorer()
    texts = ["a", "bbbb", "aaaa", "", "aaaaa"]
    top = predicted_topk_of(scorer, texts, 2, batch_size=2)
    assert top.tolist() == [[0, 1], [0, 1], [0, 2], [1, 0], [0, 2]]  # ties to the lower label index
    assert scorer.calls == [(2, 2), (2, 2), (1, 2)]
    assert predicted_topk_of(scorer, [], 2, batch_size=2).shape == (0, 2)


def test_a_bin_without_pairs_is_reported_and_a_kind_without_any_is_a_user_error():
    from xmtc.attack.selection import choose_pairs
    from xmtc.errors import UserError

    # label 0 (freq 1) is true and predicted for every document; labels 1-2 (freq 5) are true, never predicted
    stats = _stats([1, 5, 5, 9])
    labels = [np.array([0, 1 + d % 2]) for d in range(10)]
    top = np.tile(np.array([0, 3]), (10, 1))
    bins = [FrequencyBin(1, 1), FrequencyBin(5, 5), FrequencyBin(9, 9)]
    got = choose_pairs([top], labels, stats, ["positive", "negative"], samples_per_bin=4, min_labels_per_bin=1,
                       seed=0, bins=bins)
    assert got.empty_bins["positive"] == ["5", "9"] and len(got.pairs["positive"]) == 4
    assert got.pair_bins("positive").tolist() == [0] * 4 and [len(p) for p in got.by_bin("positive")] == [4, 0, 0]
    # negatives: label 0 and 3 are predicted everywhere, 1 and 2 are negatives of half the documents each
    assert got.empty_bins["negative"] == ["1", "9"] and set(got.pairs["negative"][:, 1]) <= {1, 2}
    for d, t in got.pairs["negative"]:
        assert t not in labels[d] and t not in top[d]
    with pytest.raises(UserError, match=r"no eligible negative-targeted .* in any of the bins 1, 9"):
        choose_pairs([top], labels, stats, ["negative"], samples_per_bin=4, min_labels_per_bin=1, seed=0,
                     bins=[bins[0], bins[2]])
    with pytest.raises(UserError, match="no correctly classified .* among the requested labels"):
        choose_pairs([top], labels, stats, ["positive"], samples_per_bin=4, min_labels_per_bin=1, seed=0,
                     allowed=np.array([1, 2]))
    with pytest.raises(UserError, match="settings.kinds"):
        choose_pairs([top], labels, stats, ["untargeted"], samples_per_bin=4, min_labels_per_bin=1, seed=0)
    with pytest.raises(ValueError, match=r"tops\[0\] has shape"):
        choose_pairs([top[:3]], labels, stats, ["positive"], samples_per_bin=4, min_labels_per_bin=1, seed=0)


@pytest.mark.parametrize("equal", [True, False])
def test_nontargeted_documents_are_binned_by_their_rarest_correct_label(equal):
    from xmtc.attack.selection import choose_pairs, correct_pairs, nontargeted_pairs

    rng = np.random.default_rng(5)
    docs, num_labels = 200, 30
    freqs = rng.integers(1, 60, num_labels)
    labels = [rng.choice(num_labels, size=rng.integers(1, 6), replace=False) for _ in range(docs)]
    tops = [np.stack([rng.permutation(num_labels)[:6] for _ in range(docs)]) for _ in range(2)]
    stats = _stats(freqs)
    got = choose_pairs(tops, labels, stats, ["nontargeted", "positive"], samples_per_bin=5, min_labels_per_bin=4,
                       seed=1, equal=equal)
    assert list(got.pairs) == ["positive", "nontargeted"]  # the kinds in KINDS order
    # every document with a label correct for both models, once, with its rarest such label (ties: lower index)
    everyone = nontargeted_pairs(correct_pairs(tops, labels, num_labels), freqs)
    for d in range(docs):
        right = [t for t in labels[d] if all(t in top[d] for top in tops)]
        rows = everyone[everyone[:, 0] == d]
        if not right:
            assert len(rows) == 0
        else:
            assert rows[:, 1].tolist() == [min(right, key=lambda t: (freqs[t], t))]
    chosen = got.pairs["nontargeted"]
    assert len(np.unique(chosen[:, 0])) == len(chosen) and {tuple(p) for p in chosen} <= {tuple(p) for p in everyone}
    found = np.bincount(got.label_bin[everyone[:, 1]], minlength=len(got.bins))
    counts = [len(p) for p in got.by_bin("nontargeted")]
    if equal:  # every bin cut to the smallest
        assert counts == [min(5, found.min())] * len(got.bins)
    else:
        assert counts == np.minimum(found, 5).tolist()
    again = choose_pairs(tops, labels, stats, ["nontargeted"], samples_per_bin=5, min_labels_per_bin=4, seed=1,
                         equal=equal)
    assert np.array_equal(again.pairs["nontargeted"], chosen)  # drawn apart from the other kinds


def test_indices_of_takes_ids_and_names_and_names_the_field_for_an_unknown_one():
    from xmtc.errors import UserError

    stats = _stats([3, 4, 5, 6], names=["Fishery", "Forestry", "Dairy", "Fish stock"])
    assert stats.indices_of(["l3", "dairy", "FISHERY", "l0"]).tolist() == [0, 2, 3]
    assert stats.indices_of([]).dtype == np.int64
    with pytest.raises(UserError, match=r"settings.labels: unknown label 'fish'.*\['Fishery', 'Fish stock'\]"):
        stats.indices_of(["fish"])
    with pytest.raises(UserError, match=r"^attack.labels: unknown label 'l9'.*label space$"):
        stats.indices_of(["l9"], field="attack.labels")
